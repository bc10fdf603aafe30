/*
 * 8250/16550A UART (see serial.h).
 *
 * Transmission is instantaneous: a THR write goes straight to the back end,
 * so THR and the shift register are always empty (LSR.THRE|TEMT) and a
 * THR-empty interrupt is raised again right after each write.  Reception
 * goes through a 16-byte FIFO (one byte with FIFOs disabled) that the back
 * end fills only when there is room, so the guest never sees an overrun.
 * Below the FIFO trigger level, data reports the character-timeout
 * interrupt at once instead of after four character times.
 *
 * Register facts from the 16550 datasheet: IIR priorities (line status 0x6,
 * received data 0x4, timeout 0xC, THR empty 0x2, modem status 0x0, none
 * 0x1, bits 7:6 set with FIFOs on); reading IIR clears a THRE interrupt it
 * reports; MCR bit 3 (OUT2) gates the IRQ on PC hardware; MCR bit 4 is
 * loopback.
 */
#include "hw/serial.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hw/chardev.h"
#include "machine/board.h"

#define COM1_BASE 0x3f8
#define COM1_IRQ  4

enum {
    REG_RBR_THR = 0,
    REG_IER = 1,
    REG_IIR_FCR = 2,
    REG_LCR = 3,
    REG_MCR = 4,
    REG_LSR = 5,
    REG_MSR = 6,
    REG_SCR = 7,
};

#define IER_RDI  0x01
#define IER_THRI 0x02
#define IER_RLSI 0x04
#define IER_MSI  0x08

#define IIR_NONE    0x01
#define IIR_MSI     0x00
#define IIR_THRI    0x02
#define IIR_RDI     0x04
#define IIR_RLSI    0x06
#define IIR_TIMEOUT 0x0c
#define IIR_FIFO    0xc0

#define LCR_DLAB   0x80
#define MCR_OUT2   0x08
#define MCR_LOOP   0x10
#define LSR_DR     0x01
#define LSR_OE     0x02
#define LSR_THRE   0x20
#define LSR_TEMT   0x40
#define FCR_ENABLE 0x01
#define FCR_CLR_RX 0x02

struct serial {
    struct device dev;
    pthread_mutex_t lock;
    struct serial_regs r;
    bool irq_level;
    struct chardev *cd;
};

/* ---- register logic ---- */

void serial_regs_reset(struct serial_regs *s)
{
    memset(s, 0, sizeof(*s));
    s->lsr = LSR_THRE | LSR_TEMT;
    s->msr = 0xb0; /* DCD, DSR, CTS: a line is connected */
}

static bool fifo_on(const struct serial_regs *s)
{
    return s->fcr & FCR_ENABLE;
}

static unsigned rx_capacity(const struct serial_regs *s)
{
    return fifo_on(s) ? SERIAL_FIFO_SIZE : 1;
}

unsigned serial_regs_rx_room(const struct serial_regs *s)
{
    return rx_capacity(s) - s->rx_count;
}

void serial_regs_rx_push(struct serial_regs *s, uint8_t byte)
{
    if (s->rx_count >= rx_capacity(s)) {
        s->lsr |= LSR_OE;
        return;
    }
    s->rx[(s->rx_head + s->rx_count) % SERIAL_FIFO_SIZE] = byte;
    s->rx_count++;
}

static unsigned trigger_level(const struct serial_regs *s)
{
    static const unsigned levels[4] = {1, 4, 8, 14};
    return fifo_on(s) ? levels[s->fcr >> 6] : 1;
}

static uint8_t pending_iir(const struct serial_regs *s)
{
    if ((s->ier & IER_RLSI) && (s->lsr & LSR_OE)) {
        return IIR_RLSI;
    }
    if ((s->ier & IER_RDI) && s->rx_count) {
        return s->rx_count >= trigger_level(s) ? IIR_RDI : IIR_TIMEOUT;
    }
    if ((s->ier & IER_THRI) && s->thre_pending) {
        return IIR_THRI;
    }
    if ((s->ier & IER_MSI) && (s->msr & 0x0f)) {
        return IIR_MSI;
    }
    return IIR_NONE;
}

bool serial_regs_irq(const struct serial_regs *s)
{
    return (s->mcr & MCR_OUT2) && pending_iir(s) != IIR_NONE;
}

static uint8_t rx_pop(struct serial_regs *s)
{
    if (!s->rx_count) {
        return 0;
    }
    uint8_t b = s->rx[s->rx_head];
    s->rx_head = (uint8_t)((s->rx_head + 1) % SERIAL_FIFO_SIZE);
    s->rx_count--;
    return b;
}

bool serial_regs_write(struct serial_regs *s, unsigned reg, uint8_t val, uint8_t *tx)
{
    bool dlab = s->lcr & LCR_DLAB;
    switch (reg) {
    case REG_RBR_THR:
        if (dlab) {
            s->dll = val;
            return false;
        }
        s->thre_pending = true; /* sent at once: THR is empty again */
        if (s->mcr & MCR_LOOP) {
            serial_regs_rx_push(s, val);
            return false;
        }
        *tx = val;
        return true;
    case REG_IER:
        if (dlab) {
            s->dlm = val;
            return false;
        }
        if ((val & IER_THRI) && !(s->ier & IER_THRI)) {
            s->thre_pending = true; /* enabling it with THR empty raises it */
        }
        s->ier = val & 0x0f;
        return false;
    case REG_IIR_FCR:
        if ((val ^ s->fcr) & FCR_ENABLE) {
            s->rx_count = 0; /* switching FIFO mode clears the FIFOs */
            s->rx_head = 0;
        }
        if (val & FCR_CLR_RX) {
            s->rx_count = 0;
            s->rx_head = 0;
        }
        s->fcr = val & 0xc9; /* enable, DMA mode, trigger level */
        return false;
    case REG_LCR:
        s->lcr = val;
        return false;
    case REG_MCR:
        s->mcr = val & 0x1f;
        return false;
    case REG_SCR:
        s->scr = val;
        return false;
    default:
        return false; /* LSR and MSR are read-only */
    }
}

uint8_t serial_regs_read(struct serial_regs *s, unsigned reg)
{
    bool dlab = s->lcr & LCR_DLAB;
    switch (reg) {
    case REG_RBR_THR:
        return dlab ? s->dll : rx_pop(s);
    case REG_IER:
        return dlab ? s->dlm : s->ier;
    case REG_IIR_FCR: {
        uint8_t iir = pending_iir(s);
        if (iir == IIR_THRI) {
            s->thre_pending = false;
        }
        return iir | (fifo_on(s) ? IIR_FIFO : 0);
    }
    case REG_LCR:
        return s->lcr;
    case REG_MCR:
        return s->mcr;
    case REG_LSR: {
        uint8_t lsr = s->lsr | (s->rx_count ? LSR_DR : 0);
        s->lsr &= (uint8_t)~LSR_OE; /* error bits clear on read */
        return lsr;
    }
    case REG_MSR:
        if (s->mcr & MCR_LOOP) {
            /* Loopback: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD. */
            uint8_t m = s->mcr;
            return (uint8_t)(((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) |
                             ((m & 0x08) << 4));
        }
        return s->msr;
    case REG_SCR:
        return s->scr;
    }
    return 0xff;
}

/* ---- the device ---- */

static struct serial *to_serial(struct device *dev)
{
    return (struct serial *)dev;
}

/* Called with s->lock held. */
static void update_irq(struct serial *s)
{
    bool level = serial_regs_irq(&s->r);
    if (level != s->irq_level) {
        s->irq_level = level;
        machine_set_irq(s->dev.machine, COM1_IRQ, level);
    }
}

static void serial_io(struct device *dev, uint64_t offset, uint8_t *data, uint32_t len,
                      bool is_write)
{
    struct serial *s = to_serial(dev);
    uint8_t tx = 0;
    bool send = false, room_before, room_after;
    pthread_mutex_lock(&s->lock);
    room_before = serial_regs_rx_room(&s->r) > 0;
    if (is_write) {
        send = serial_regs_write(&s->r, (unsigned)offset, data[0], &tx);
    } else {
        data[0] = serial_regs_read(&s->r, (unsigned)offset);
        memset(data + 1, 0, len - 1);
    }
    room_after = serial_regs_rx_room(&s->r) > 0;
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
    if (send && s->cd) {
        chardev_write(s->cd, &tx, 1);
    }
    if (!room_before && room_after && s->cd) {
        chardev_wake(s->cd); /* the back end may deliver input again */
    }
}

static size_t serial_can_read(void *opaque)
{
    struct serial *s = opaque;
    pthread_mutex_lock(&s->lock);
    size_t room = serial_regs_rx_room(&s->r);
    pthread_mutex_unlock(&s->lock);
    return room;
}

static void serial_receive(void *opaque, const uint8_t *buf, size_t len)
{
    struct serial *s = opaque;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < len; i++) {
        serial_regs_rx_push(&s->r, buf[i]);
    }
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

static void serial_reset(struct device *dev)
{
    struct serial *s = to_serial(dev);
    pthread_mutex_lock(&s->lock);
    serial_regs_reset(&s->r);
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
    if (s->cd) {
        chardev_wake(s->cd);
    }
}

/* State v1: ier lcr mcr lsr msr scr dll dlm fcr thre_pending rx_count rx[rx_count]. */
static void serial_save(struct device *dev, struct byte_buf *out)
{
    struct serial *s = to_serial(dev);
    pthread_mutex_lock(&s->lock);
    struct serial_regs *r = &s->r;
    uint8_t regs[] = {r->ier, r->lcr, r->mcr, r->lsr, r->msr, r->scr, r->dll, r->dlm, r->fcr};
    buf_append(out, regs, sizeof(regs));
    buf_put_u8(out, r->thre_pending);
    buf_put_u8(out, r->rx_count);
    for (unsigned i = 0; i < r->rx_count; i++) {
        buf_put_u8(out, r->rx[(r->rx_head + i) % SERIAL_FIFO_SIZE]);
    }
    pthread_mutex_unlock(&s->lock);
}

/* Parse a record into `r`: every length and the FIFO count checked; nothing else touched. */
static int serial_parse(const void *data, size_t len, struct serial_regs *r, struct error **errp)
{
    struct byte_reader rd;
    serial_regs_reset(r);
    reader_init(&rd, data, len);
    r->ier = reader_u8(&rd);
    r->lcr = reader_u8(&rd);
    r->mcr = reader_u8(&rd);
    r->lsr = reader_u8(&rd);
    r->msr = reader_u8(&rd);
    r->scr = reader_u8(&rd);
    r->dll = reader_u8(&rd);
    r->dlm = reader_u8(&rd);
    r->fcr = reader_u8(&rd);
    r->thre_pending = reader_u8(&rd) != 0;
    uint8_t count = reader_u8(&rd);
    if (!rd.overrun && count > rx_capacity(r)) {
        error_setg(errp, "receive FIFO holds %u bytes, more than its %u", count, rx_capacity(r));
        return -1;
    }
    reader_get(&rd, r->rx, count);
    r->rx_count = count;
    return reader_finish(&rd, "serial state", errp);
}

static int serial_check(struct device *dev, const void *data, size_t len, struct error **errp)
{
    (void)dev;
    struct serial_regs r;
    return serial_parse(data, len, &r, errp);
}

static int serial_load(struct device *dev, const void *data, size_t len, struct error **errp)
{
    struct serial *s = to_serial(dev);
    struct serial_regs r;
    if (serial_parse(data, len, &r, errp) < 0) {
        return -1;
    }
    pthread_mutex_lock(&s->lock);
    s->r = r;
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
    if (s->cd) {
        chardev_wake(s->cd);
    }
    return 0;
}

static void serial_free(struct device *dev)
{
    struct serial *s = to_serial(dev);
    chardev_free(s->cd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static const struct device_ops serial_ops = {
        .type = "serial",
        .version = 1,
        .reset = serial_reset,
        .save = serial_save,
        .check = serial_check,
        .load = serial_load,
        .free = serial_free,
};

struct device *serial_create(struct machine *m, struct chardev *cd, struct error **errp)
{
    struct serial *s = calloc(1, sizeof(*s));
    if (!s) {
        abort();
    }
    s->dev.ops = &serial_ops;
    s->cd = cd;
    pthread_mutex_init(&s->lock, NULL);
    serial_regs_reset(&s->r);
    machine_add_device(m, &s->dev, "serial0");
    if (machine_add_io(m, IO_SPACE_PIO, COM1_BASE, 8, serial_io, &s->dev, errp) < 0) {
        return NULL;
    }
    if (cd) {
        struct chardev_handlers h = {serial_can_read, serial_receive, s};
        if (chardev_start(cd, &h, errp) < 0) {
            return NULL;
        }
    }
    return &s->dev;
}
