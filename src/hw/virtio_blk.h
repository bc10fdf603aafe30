/*
 * virtio-blk over modern virtio-pci (-device virtio-blk-pci,drive=NODE).
 */
#ifndef SNAPVM_HW_VIRTIO_BLK_H
#define SNAPVM_HW_VIRTIO_BLK_H

#include "hw/device.h"

struct block_node;
struct pci_bus;

/* Create the device on `bus`, backed by block node `node`; `id` names it. */
struct device *virtio_blk_create(struct machine *m, struct pci_bus *bus, struct block_node *node,
                                 const char *id, struct error **errp);

#endif
