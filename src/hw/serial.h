/*
 * 8250/16550A UART model (COM1 at 0x3f8, IRQ 4).
 */
#ifndef SNAPVM_HW_SERIAL_H
#define SNAPVM_HW_SERIAL_H

#include <stdbool.h>
#include <stdint.h>

#include "hw/device.h"

struct chardev;

#define SERIAL_FIFO_SIZE 16

/* The register file; public for the unit tests. */
struct serial_regs {
    uint8_t ier, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
    bool thre_pending; /* a THR-empty interrupt is pending */
    uint8_t rx[SERIAL_FIFO_SIZE];
    uint8_t rx_head;
    uint8_t rx_count;
};

/*
 * Create COM1 on machine `m` with back end `cd` (may be NULL: output is
 * dropped); the device owns the back end and starts its input thread.
 */
struct device *serial_create(struct machine *m, struct chardev *cd, struct error **errp);

/* The pure register logic, without locking, I/O or interrupts (unit tests). */
void serial_regs_reset(struct serial_regs *s);
/* Returns the byte to transmit in *tx (and true) on a THR write. */
bool serial_regs_write(struct serial_regs *s, unsigned reg, uint8_t val, uint8_t *tx);
uint8_t serial_regs_read(struct serial_regs *s, unsigned reg);
/* Room in the receive FIFO, and the push of one received byte. */
unsigned serial_regs_rx_room(const struct serial_regs *s);
void serial_regs_rx_push(struct serial_regs *s, uint8_t byte);
/* Level of the interrupt line (includes MCR.OUT2, which gates it on a PC). */
bool serial_regs_irq(const struct serial_regs *s);

#endif
