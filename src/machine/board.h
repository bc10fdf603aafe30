/*
 * The board interface: what a device model (src/hw) may ask of the machine
 * it is plugged into, and nothing more.  A device registers itself and its
 * I/O regions, drives interrupt lines, reaches guest RAM, looks up the
 * block node it serves, and declares how its PCI interrupt pin is wired
 * (the machine lists that wiring in the MP table it builds for a Linux
 * guest).  struct machine stays private to src/machine: device models
 * include this header, not machine/internal.h.
 */
#ifndef SNAPVM_MACHINE_BOARD_H
#define SNAPVM_MACHINE_BOARD_H

#include <stdbool.h>
#include <stdint.h>

#include "hw/device.h"
#include "machine/ram.h"
#include "util/error.h"

struct block_node;
struct machine;

/* Devices, in creation order (snapshots name them by id). */
void machine_add_device(struct machine *m, struct device *dev, const char *id);
/* Free every device, in creation order (hw_free_devices). */
void board_free_devices(struct machine *m);

/* A port-I/O or MMIO region; fails if it overlaps one already registered. */
int machine_add_io(struct machine *m, enum io_space space, uint64_t base, uint64_t len, io_fn fn,
                   struct device *dev, struct error **errp);

/* Drive interrupt line `irq` (GSI 0..23: PIC and IOAPIC input) to `level`. */
void machine_set_irq(struct machine *m, unsigned irq, bool level);

/* Record that INTx pin `pin` (1 = INTA#) of PCI bus 0 slot `slot` drives
 * GSI `gsi` (level-triggered, high when asserted). */
#define BOARD_MAX_PCI_IRQS 32
int board_add_pci_irq(struct machine *m, unsigned slot, unsigned pin, unsigned gsi,
                      struct error **errp);

const struct guest_ram *machine_guest_ram(struct machine *m);

/* The -blockdev node called `node_name`, or NULL. */
struct block_node *board_block_node(struct machine *m, const char *node_name);

/* A guest-requested reset (served by the main thread). */
void machine_request_reset(struct machine *m);

#endif
