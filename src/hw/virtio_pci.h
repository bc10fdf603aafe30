/*
 * The virtio-over-PCI transport, modern interface only (virtio 1.0,
 * section 4.1): vendor 0x1af4, device 0x1040 + device type, one 32-bit
 * memory BAR holding the common configuration, ISR status, device-specific
 * configuration and notification structures, each announced by a vendor
 * capability; plus the PCI-configuration-access capability.  Interrupts are
 * INTx (no MSI-X).  A device type (virtio-blk) embeds struct virtio_pci and
 * supplies struct virtio_ops.
 */
#ifndef SNAPVM_HW_VIRTIO_PCI_H
#define SNAPVM_HW_VIRTIO_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "hw/pci.h"
#include "hw/virtio_ring.h"

#define VIRTIO_F_VERSION_1 32

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER      2
#define VIRTIO_STATUS_DRIVER_OK   4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

#define VIRTIO_MAX_QUEUES 4

struct virtio_pci;

struct virtio_ops {
    /* Process queue `q` after the driver notified it (lock held). */
    void (*notify)(struct virtio_pci *vp, unsigned q);
    /* Read the device-specific configuration (lock held). */
    void (*config_read)(struct virtio_pci *vp, uint64_t offset, uint8_t *data, uint32_t len);
    /* Device-specific part of a reset (lock held). */
    void (*reset)(struct virtio_pci *vp);
};

struct virtio_pci {
    struct pci_device pci; /* first: a virtio_pci is a pci_device */
    const struct virtio_ops *vops;
    pthread_mutex_t lock;
    uint64_t device_features;
    uint64_t driver_features;
    uint32_t device_feature_select;
    uint32_t driver_feature_select;
    uint8_t status;
    uint8_t isr;
    uint16_t queue_select;
    uint16_t num_queues;
    uint16_t queue_max;
    struct virtq vq[VIRTIO_MAX_QUEUES];
    uint8_t cfg_cap; /* offset of the PCI-configuration-access capability */
};

/* Set up the PCI identity, BAR and capabilities (call before pci_bus_plug). */
void virtio_pci_init(struct virtio_pci *vp, const struct virtio_ops *vops, uint16_t device_type,
                     uint32_t class_code, uint64_t features, uint16_t num_queues,
                     uint16_t queue_max, uint32_t device_config_len);
/* Raise the used-buffer interrupt for queue q if the driver wants it (lock held). */
void virtio_pci_notify_used(struct virtio_pci *vp, unsigned q);
/* Mark the device broken (VIRTIO_STATUS_NEEDS_RESET) after a driver error (lock held). */
void virtio_pci_needs_reset(struct virtio_pci *vp, const char *why);
/* Transport reset (lock held by the caller or not yet shared). */
void virtio_pci_reset(struct virtio_pci *vp);
/*
 * Transport state: the PCI configuration, the registers, every queue.
 * Loading is parse (checks everything against this transport, changes
 * nothing) then apply (cannot fail), so that a device can refuse a record
 * before it touches anything.
 */
struct virtio_pci_state {
    uint8_t config[PCI_CONFIG_SIZE];
    uint64_t driver_features;
    uint32_t device_feature_select;
    uint32_t driver_feature_select;
    uint8_t status;
    uint8_t isr;
    uint16_t queue_select;
    struct virtq vq[VIRTIO_MAX_QUEUES];
};
void virtio_pci_save(struct virtio_pci *vp, struct byte_buf *out);
int virtio_pci_parse(const struct virtio_pci *vp, struct byte_reader *r,
                     struct virtio_pci_state *st, struct error **errp);
/* Lock held. */
void virtio_pci_apply(struct virtio_pci *vp, const struct virtio_pci_state *st);
/* parse + apply: on an error nothing changed. */
int virtio_pci_load(struct virtio_pci *vp, struct byte_reader *r, struct error **errp);
/* The BAR handler (exposed for unit tests). */
void virtio_pci_bar_io(struct pci_device *pd, int bar, uint64_t offset, uint8_t *data, uint32_t len,
                       bool is_write);

#endif
