/*
 * The board (see hw.h): COM1 first, then the PCI host bridge and the
 * virtio-blk-pci devices in command-line order, so device ids and PCI slots
 * are stable from one run to the next (snapshots depend on the ids).
 */
#include "hw/hw.h"

#include <jansson.h>

#include "hw/chardev.h"
#include "hw/serial.h"
#include "machine/cmdline.h"
#include "machine/internal.h"

int hw_create_devices(struct machine *m, const struct vm_config *cfg, struct error **errp)
{
    struct chardev *cd = chardev_new(cfg->serial ? cfg->serial : "null", errp);
    if (!cd) {
        return -1;
    }
    if (!serial_create(m, cd, errp)) {
        return -1;
    }
    if (json_array_size(cfg->blockdevs) > 0) {
        error_setg(errp, "-blockdev: block devices are not available in this build yet");
        return -1;
    }
    size_t i;
    json_t *dev;
    json_array_foreach(cfg->devices, i, dev)
    {
        const char *drive = json_string_value(json_object_get(dev, "drive"));
        error_setg(errp, "-device virtio-blk-pci: drive '%s' names no block node", drive);
        return -1;
    }
    return 0;
}

void hw_free_devices(struct machine *m)
{
    struct device *d = m->devices;
    m->devices = m->devices_tail = NULL;
    while (d) {
        struct device *next = d->next;
        d->ops->free(d);
        d = next;
    }
}
