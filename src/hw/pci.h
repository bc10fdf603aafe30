/*
 * PCI: the configuration space of a PCI function (header type 0, 256 bytes,
 * capabilities, 32-bit memory BARs, INTx) and the host bridge that exposes
 * bus 0 through configuration mechanism #1 (ports 0xCF8/0xCFC) and decodes
 * the memory BARs inside the PCI hole.  snapvm acts as the firmware: BARs
 * are assigned and memory decoding enabled when a device is plugged, and
 * kept across a reset.
 */
#ifndef SNAPVM_HW_PCI_H
#define SNAPVM_HW_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "hw/device.h"

#define PCI_CONFIG_SIZE 256
#define PCI_NUM_BARS    6

#define PCI_VENDOR_ID      0x00
#define PCI_DEVICE_ID      0x02
#define PCI_COMMAND        0x04
#define PCI_STATUS         0x06
#define PCI_REVISION_ID    0x08
#define PCI_CLASS_PROG     0x09
#define PCI_HEADER_TYPE    0x0e
#define PCI_BAR0           0x10
#define PCI_SUBSYSTEM_VID  0x2c
#define PCI_SUBSYSTEM_ID   0x2e
#define PCI_CAP_PTR        0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN  0x3d

#define PCI_COMMAND_MEMORY       0x0002
#define PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_STATUS_INTERRUPT     0x0008
#define PCI_STATUS_CAP_LIST      0x0010

struct pci_device;
struct pci_bus;

/* An access inside BAR `bar` at `offset` (see io_fn). */
typedef void (*pci_bar_fn)(struct pci_device *pd, int bar, uint64_t offset, uint8_t *data,
                           uint32_t len, bool is_write);
/*
 * Optional hook for configuration accesses that have side effects beyond
 * the register file (virtio's PCI-configuration-access capability): called
 * after a write has been stored, or before a read is served; it may update
 * pd->config.
 */
typedef void (*pci_config_fn)(struct pci_device *pd, unsigned offset, unsigned len, bool is_write);

struct pci_device {
    struct device dev; /* first: a pci_device is a device */
    uint8_t config[PCI_CONFIG_SIZE];
    uint8_t wmask[PCI_CONFIG_SIZE]; /* writable bits */
    uint32_t bar_size[PCI_NUM_BARS];
    pci_bar_fn bar_fn;
    pci_config_fn config_fn;
    struct pci_bus *bus;
    unsigned slot;
    unsigned irq; /* ISA interrupt line INTA# is routed to */
    bool irq_level;
    uint8_t next_cap; /* where pci_add_cap() puts the next capability */
};

/* ---- configuration space (pure; unit-tested) ---- */

void pci_config_init(struct pci_device *pd, uint16_t vendor, uint16_t device, uint8_t revision,
                     uint32_t class_code, uint16_t subsys_vendor, uint16_t subsys_id);
/* A 32-bit non-prefetchable memory BAR of `size` bytes (a power of two >= 16). */
void pci_set_bar(struct pci_device *pd, int bar, uint32_t size);
/*
 * Append a vendor-specific capability (cap_vndr 0x09): `body` is the bytes
 * after cap_vndr/cap_next, `writable` marks bytes the driver may write.
 * Returns its offset.
 */
uint8_t pci_add_vendor_cap(struct pci_device *pd, const uint8_t *body, uint8_t len,
                           const uint8_t *writable);
uint32_t pci_config_read(struct pci_device *pd, unsigned offset, unsigned len);
void pci_config_write(struct pci_device *pd, unsigned offset, unsigned len, uint32_t val);
/* The current address of a memory BAR, or 0 if unassigned or decoding is off. */
uint64_t pci_bar_addr(const struct pci_device *pd, int bar);
/* Save/load helpers for a device's record: the 256 configuration bytes. */
void pci_config_save(struct pci_device *pd, struct byte_buf *out);
void pci_config_load(struct pci_device *pd, struct byte_reader *r);

/* ---- the bus ---- */

/* The host bridge (slot 0) and bus 0: device "pci-host". */
struct pci_bus *pci_bus_create(struct machine *m, struct error **errp);
/* Plug a function into the next free slot; assigns its BARs and INTx line. */
int pci_bus_plug(struct pci_bus *bus, struct pci_device *pd, struct error **errp);
/* Assert or deassert INTA# (honours PCI_COMMAND_INTX_DISABLE). */
void pci_set_irq(struct pci_device *pd, bool level);

#endif
