/*
 * The generic half of the device interface: accessors that dispatch to a
 * device's ops, so that callers (snapshot code, machine reset) never reach
 * into a device model.
 */
#include "hw/device.h"

const char *device_id(const struct device *dev)
{
    return dev->id;
}

const char *device_type(const struct device *dev)
{
    return dev->ops->type;
}

uint32_t device_state_version(const struct device *dev)
{
    return dev->ops->version;
}

struct block_node *device_block_node(const struct device *dev)
{
    return dev->ops->block_node ? dev->ops->block_node(dev) : NULL;
}

void device_save(struct device *dev, struct byte_buf *out)
{
    if (dev->ops->save) {
        dev->ops->save(dev, out);
    }
}

int device_check(struct device *dev, const void *data, size_t len, struct error **errp)
{
    if (!dev->ops->check) {
        if (len && !dev->ops->load) {
            error_setg(errp, "device '%s': unexpected state (%zu bytes)", dev->id, len);
            return -1;
        }
        return 0;
    }
    if (dev->ops->check(dev, data, len, errp) < 0) {
        error_prepend(errp, "device '%s'", dev->id);
        return -1;
    }
    return 0;
}

int device_load(struct device *dev, const void *data, size_t len, struct error **errp)
{
    if (!dev->ops->load) {
        if (len) {
            error_setg(errp, "device '%s': unexpected state (%zu bytes)", dev->id, len);
            return -1;
        }
        return 0;
    }
    if (dev->ops->load(dev, data, len, errp) < 0) {
        error_prepend(errp, "device '%s'", dev->id);
        return -1;
    }
    return 0;
}

void device_reset(struct device *dev)
{
    if (dev->ops->reset) {
        dev->ops->reset(dev);
    }
}
