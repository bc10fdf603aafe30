/*
 * The board (see hw.h): COM1 first, then the PCI host bridge and the
 * virtio-blk-pci devices in command-line order, so device ids and PCI slots
 * are stable from one run to the next (snapshots depend on the ids).
 * Everything here reaches the machine through the board interface
 * (machine/board.h), never through its internals.
 */
#include "hw/hw.h"

#include <jansson.h>
#include <stdio.h>

#include <string.h>

#include "block/block.h"
#include "hw/chardev.h"
#include "hw/pci.h"
#include "hw/serial.h"
#include "hw/virtio_blk.h"
#include "machine/cmdline.h"
#include "machine/board.h"

int hw_create_devices(struct machine *m, const struct vm_config *cfg, struct error **errp)
{
    struct chardev *cd = chardev_new(cfg->serial ? cfg->serial : "null", errp);
    if (!cd) {
        return -1;
    }
    if (!serial_create(m, cd, errp)) {
        return -1;
    }
    struct pci_bus *bus = pci_bus_create(m, errp);
    if (!bus) {
        return -1;
    }
    size_t i;
    json_t *dev;
    json_array_foreach(cfg->devices, i, dev)
    {
        const char *drive = json_string_value(json_object_get(dev, "drive"));
        const char *id = json_string_value(json_object_get(dev, "id"));
        struct block_node *node = board_block_node(m, drive);
        if (!node) {
            error_setg(errp, "-device virtio-blk-pci: drive '%s' names no block node", drive);
            return -1;
        }
        char auto_id[64];
        if (!id) {
            snprintf(auto_id, sizeof(auto_id), "virtio-blk:%s", drive);
            id = auto_id;
        }
        for (size_t j = 0; j < i; j++) {
            json_t *other = json_array_get(cfg->devices, j);
            const char *other_id = json_string_value(json_object_get(other, "id"));
            if (strcmp(json_string_value(json_object_get(other, "drive")), drive) == 0) {
                error_setg(errp, "-device virtio-blk-pci: drive '%s' is already in use", drive);
                return -1;
            }
            if (other_id && strcmp(other_id, id) == 0) {
                error_setg(errp, "-device virtio-blk-pci: duplicate id '%s'", id);
                return -1;
            }
        }
        if (!virtio_blk_create(m, bus, node, id, errp)) {
            return -1;
        }
    }
    return 0;
}

void hw_free_devices(struct machine *m)
{
    board_free_devices(m);
}
