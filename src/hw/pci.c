/*
 * PCI configuration space and host bridge (see pci.h).
 *
 * Facts used, from the PCI Local Bus specification: the type-0 header
 * layout; configuration mechanism #1 (a dword write to 0xCF8 with bit 31 set
 * selects bus/device/function/register, 0xCFC-0xCFF then access that dword);
 * a function that does not exist reads as all ones; BAR sizing by writing
 * all ones and reading back the size mask (the low 4 bits of a memory BAR
 * are read-only type bits); the capability list at 0x34 with status bit 4.
 *
 * The bus lock serialises configuration accesses with BAR decoding, since
 * several vCPUs may touch them at once; device handlers run unlocked.
 */
#include "hw/pci.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "machine/board.h"
#include "util/log.h"

#define PCI_MAX_SLOTS   32
#define PCI_CONFIG_ADDR 0xcf8
#define PCI_CONFIG_DATA 0xcfc

struct pci_bus {
    struct pci_device host; /* slot 0: the host bridge itself */
    pthread_mutex_t lock;
    uint32_t config_addr;
    struct pci_device *slots[PCI_MAX_SLOTS];
    uint64_t next_mmio;
};

/* ---- configuration space ---- */

static void put16(uint8_t *p, uint16_t v)
{
    le_store(p, 2, v);
}

void pci_config_init(struct pci_device *pd, uint16_t vendor, uint16_t device, uint8_t revision,
                     uint32_t class_code, uint16_t subsys_vendor, uint16_t subsys_id)
{
    memset(pd->config, 0, sizeof(pd->config));
    memset(pd->wmask, 0, sizeof(pd->wmask));
    memset(pd->bar_size, 0, sizeof(pd->bar_size));
    put16(pd->config + PCI_VENDOR_ID, vendor);
    put16(pd->config + PCI_DEVICE_ID, device);
    pd->config[PCI_REVISION_ID] = revision;
    le_store(pd->config + PCI_CLASS_PROG, 3, class_code);
    pd->config[PCI_HEADER_TYPE] = 0;
    put16(pd->config + PCI_SUBSYSTEM_VID, subsys_vendor);
    put16(pd->config + PCI_SUBSYSTEM_ID, subsys_id);
    /* Command: I/O, memory, bus master, INTx disable are the driver's. */
    put16(pd->wmask + PCI_COMMAND, 0x0407);
    pd->wmask[PCI_INTERRUPT_LINE] = 0xff;
    pd->next_cap = 0x40;
}

void pci_set_bar(struct pci_device *pd, int bar, uint32_t size)
{
    pd->bar_size[bar] = size;
    /* Address bits above the size are writable; the type bits (0: 32-bit
     * memory, not prefetchable) are not. */
    le_store(pd->wmask + PCI_BAR0 + bar * 4, 4, ~(size - 1) & ~0xfu);
}

uint8_t pci_add_vendor_cap(struct pci_device *pd, const uint8_t *body, uint8_t len,
                           const uint8_t *writable)
{
    uint8_t off = pd->next_cap;
    uint8_t total = (uint8_t)(len + 2);
    pd->config[off] = 0x09;
    pd->config[off + 1] = 0;
    memcpy(pd->config + off + 2, body, len);
    for (uint8_t i = 0; writable && i < len; i++) {
        pd->wmask[off + 2 + i] = writable[i];
    }
    /* Link it at the end of the list. */
    if (!(pd->config[PCI_STATUS] & PCI_STATUS_CAP_LIST)) {
        pd->config[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
        pd->config[PCI_CAP_PTR] = off;
    } else {
        uint8_t p = pd->config[PCI_CAP_PTR];
        while (pd->config[p + 1]) {
            p = pd->config[p + 1];
        }
        pd->config[p + 1] = off;
    }
    pd->next_cap = (uint8_t)((off + total + 3) & ~3);
    return off;
}

uint32_t pci_config_read(struct pci_device *pd, unsigned offset, unsigned len)
{
    if (offset >= PCI_CONFIG_SIZE || len > PCI_CONFIG_SIZE - offset) {
        return 0xffffffffu;
    }
    if (pd->config_fn) {
        pd->config_fn(pd, offset, len, false);
    }
    return (uint32_t)le_load(pd->config + offset, len);
}

void pci_config_write(struct pci_device *pd, unsigned offset, unsigned len, uint32_t val)
{
    if (offset >= PCI_CONFIG_SIZE || len > PCI_CONFIG_SIZE - offset) {
        return;
    }
    for (unsigned i = 0; i < len; i++) {
        uint8_t b = (uint8_t)(val >> (8 * i));
        uint8_t m = pd->wmask[offset + i];
        pd->config[offset + i] = (uint8_t)((pd->config[offset + i] & ~m) | (b & m));
    }
    if (pd->config_fn) {
        pd->config_fn(pd, offset, len, true);
    }
}

uint64_t pci_bar_addr(const struct pci_device *pd, int bar)
{
    if (!pd->bar_size[bar] || !(le_load(pd->config + PCI_COMMAND, 2) & PCI_COMMAND_MEMORY)) {
        return 0;
    }
    return le_load(pd->config + PCI_BAR0 + bar * 4, 4) & ~0xfULL;
}

void pci_config_save(struct pci_device *pd, struct byte_buf *out)
{
    buf_append(out, pd->config, sizeof(pd->config));
}

void pci_config_load(struct pci_device *pd, struct byte_reader *r)
{
    uint8_t cfg[PCI_CONFIG_SIZE];
    reader_get(r, cfg, sizeof(cfg));
    if (!r->overrun) {
        memcpy(pd->config, cfg, sizeof(cfg));
    }
}

/* ---- interrupts ---- */

/*
 * INTx takes no bus lock: a device raises it from its own handlers (under
 * its own lock), which the bus lock may already be waiting on.  The status
 * bit is updated atomically instead.
 */
static void update_intx(struct pci_device *pd)
{
    bool pending = __atomic_load_n(&pd->irq_level, __ATOMIC_SEQ_CST);
    uint8_t cmd_hi = __atomic_load_n(&pd->config[PCI_COMMAND + 1], __ATOMIC_RELAXED);
    bool level = pending && !(cmd_hi & (PCI_COMMAND_INTX_DISABLE >> 8));
    if (pending) {
        __atomic_or_fetch(&pd->config[PCI_STATUS], PCI_STATUS_INTERRUPT, __ATOMIC_RELAXED);
    } else {
        __atomic_and_fetch(&pd->config[PCI_STATUS], (uint8_t)~PCI_STATUS_INTERRUPT,
                           __ATOMIC_RELAXED);
    }
    if (pd->bus) {
        machine_set_irq(pd->dev.machine, pd->irq, level);
    }
}

void pci_set_irq(struct pci_device *pd, bool level)
{
    __atomic_store_n(&pd->irq_level, level, __ATOMIC_SEQ_CST);
    update_intx(pd);
}

/* ---- the host bridge ---- */

static struct pci_device *selected(struct pci_bus *bus, unsigned *reg)
{
    uint32_t a = bus->config_addr;
    if (!(a & 0x80000000u) || ((a >> 16) & 0xff) != 0 || ((a >> 8) & 7) != 0) {
        return NULL; /* disabled, another bus, or a function other than 0 */
    }
    *reg = a & 0xfc;
    return bus->slots[(a >> 11) & 0x1f];
}

static void pci_host_pio(struct device *dev, uint64_t offset, uint8_t *data, uint32_t len,
                         bool is_write)
{
    struct pci_bus *bus = (struct pci_bus *)dev;
    pthread_mutex_lock(&bus->lock);
    if (offset < 4) {
        /* Only a dword access hits the address register (mechanism #1). */
        if (offset == 0 && len == 4) {
            if (is_write) {
                bus->config_addr = (uint32_t)le_load(data, 4) & 0x80fffffcu;
            } else {
                le_store(data, 4, bus->config_addr);
            }
        } else if (offset == 1 && len == 1 && is_write) {
            /* 0xCF9, the PC's reset control register: RST_CPU (bit 2)
             * resets the machine (QEMU and firmware use 0x06 there). */
            if (data[0] & 0x04) {
                machine_request_reset(dev->machine);
            }
        } else if (!is_write) {
            memset(data, 0xff, len);
        }
    } else {
        unsigned reg;
        struct pci_device *pd = selected(bus, &reg);
        unsigned off = reg + (unsigned)(offset - 4);
        if (!pd) {
            if (!is_write) {
                memset(data, 0xff, len);
            }
        } else if (is_write) {
            bool intx_was_off = le_load(pd->config + PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE;
            pci_config_write(pd, off, len, (uint32_t)le_load(data, len));
            bool intx_off = le_load(pd->config + PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE;
            if (intx_off != intx_was_off) {
                update_intx(pd);
            }
        } else {
            le_store(data, len, pci_config_read(pd, off, len));
        }
    }
    pthread_mutex_unlock(&bus->lock);
}

static void pci_host_mmio(struct device *dev, uint64_t offset, uint8_t *data, uint32_t len,
                          bool is_write)
{
    struct pci_bus *bus = (struct pci_bus *)dev;
    uint64_t addr = GUEST_PCI_MMIO_BASE + offset;
    struct pci_device *hit = NULL;
    int hit_bar = 0;
    uint64_t hit_off = 0;
    pthread_mutex_lock(&bus->lock);
    for (unsigned s = 1; s < PCI_MAX_SLOTS && !hit; s++) {
        struct pci_device *pd = bus->slots[s];
        for (int b = 0; pd && b < PCI_NUM_BARS; b++) {
            uint64_t base = pci_bar_addr(pd, b);
            if (base && addr >= base && addr - base < pd->bar_size[b]) {
                hit = pd;
                hit_bar = b;
                hit_off = addr - base;
                break;
            }
        }
    }
    pthread_mutex_unlock(&bus->lock);
    if (hit && hit->bar_fn) {
        hit->bar_fn(hit, hit_bar, hit_off, data, len, is_write);
    } else if (!is_write) {
        memset(data, 0xff, len);
    }
}

/* Host bridge state v1: the address register, then its configuration space. */
static void pci_host_save(struct device *dev, struct byte_buf *out)
{
    struct pci_bus *bus = (struct pci_bus *)dev;
    pthread_mutex_lock(&bus->lock);
    buf_put_u32(out, bus->config_addr);
    pci_config_save(&bus->host, out);
    pthread_mutex_unlock(&bus->lock);
}

/* Parse a record: the address register and the host bridge's configuration space. */
static int pci_host_parse(const void *data, size_t len, uint32_t *addr, uint8_t *config,
                          struct error **errp)
{
    struct byte_reader r;
    reader_init(&r, data, len);
    *addr = reader_u32(&r);
    reader_get(&r, config, PCI_CONFIG_SIZE);
    return reader_finish(&r, "pci-host state", errp);
}

static int pci_host_check(struct device *dev, const void *data, size_t len, struct error **errp)
{
    (void)dev;
    uint32_t addr;
    uint8_t config[PCI_CONFIG_SIZE];
    return pci_host_parse(data, len, &addr, config, errp);
}

static int pci_host_load(struct device *dev, const void *data, size_t len, struct error **errp)
{
    struct pci_bus *bus = (struct pci_bus *)dev;
    uint32_t addr;
    uint8_t config[PCI_CONFIG_SIZE];
    if (pci_host_parse(data, len, &addr, config, errp) < 0) {
        return -1;
    }
    pthread_mutex_lock(&bus->lock);
    bus->config_addr = addr;
    memcpy(bus->host.config, config, sizeof(config));
    pthread_mutex_unlock(&bus->lock);
    return 0;
}

static void pci_host_reset(struct device *dev)
{
    struct pci_bus *bus = (struct pci_bus *)dev;
    pthread_mutex_lock(&bus->lock);
    bus->config_addr = 0;
    pthread_mutex_unlock(&bus->lock);
}

static void pci_host_free(struct device *dev)
{
    struct pci_bus *bus = (struct pci_bus *)dev;
    pthread_mutex_destroy(&bus->lock);
    free(bus);
}

static const struct device_ops pci_host_ops = {
        .type = "pci-host",
        .version = 1,
        .reset = pci_host_reset,
        .save = pci_host_save,
        .check = pci_host_check,
        .load = pci_host_load,
        .free = pci_host_free,
};

struct pci_bus *pci_bus_create(struct machine *m, struct error **errp)
{
    struct pci_bus *bus = calloc(1, sizeof(*bus));
    if (!bus) {
        abort();
    }
    pthread_mutex_init(&bus->lock, NULL);
    bus->host.dev.ops = &pci_host_ops;
    /* Intel 440FX-style host bridge IDs; class 06/00/00 (host bridge). */
    pci_config_init(&bus->host, 0x8086, 0x1237, 2, 0x060000, 0, 0);
    bus->slots[0] = &bus->host;
    bus->host.bus = bus;
    bus->next_mmio = GUEST_PCI_MMIO_BASE;
    machine_add_device(m, &bus->host.dev, "pci-host");
    if (machine_add_io(m, IO_SPACE_PIO, PCI_CONFIG_ADDR, 8, pci_host_pio, &bus->host.dev, errp) <
                0 ||
        machine_add_io(m, IO_SPACE_MMIO, GUEST_PCI_MMIO_BASE, GUEST_PCI_MMIO_SIZE, pci_host_mmio,
                       &bus->host.dev, errp) < 0) {
        return NULL;
    }
    return bus;
}

int pci_bus_plug(struct pci_bus *bus, struct pci_device *pd, struct error **errp)
{
    unsigned slot = 1;
    while (slot < PCI_MAX_SLOTS && bus->slots[slot]) {
        slot++;
    }
    if (slot == PCI_MAX_SLOTS) {
        error_setg(errp, "%s: no free PCI slot (at most %d devices)", pd->dev.id,
                   PCI_MAX_SLOTS - 1);
        return -1;
    }
    /* Firmware's job: naturally aligned BAR addresses, memory decoding on. */
    for (int b = 0; b < PCI_NUM_BARS; b++) {
        uint32_t size = pd->bar_size[b];
        if (!size) {
            continue;
        }
        uint64_t addr = (bus->next_mmio + size - 1) & ~(uint64_t)(size - 1);
        if (addr + size > GUEST_PCI_MMIO_BASE + GUEST_PCI_MMIO_SIZE) {
            error_setg(errp, "%s: the PCI hole is full", pd->dev.id);
            return -1;
        }
        le_store(pd->config + PCI_BAR0 + b * 4, 4, addr);
        bus->next_mmio = addr + size;
    }
    pd->config[PCI_COMMAND] |= PCI_COMMAND_MEMORY;
    /* INTA# of odd slots on IRQ 10, even slots on IRQ 11 (ISA lines that
     * the PC leaves free). */
    pd->irq = (slot & 1) ? 10 : 11;
    pd->config[PCI_INTERRUPT_LINE] = (uint8_t)pd->irq;
    pd->config[PCI_INTERRUPT_PIN] = 1;
    /* The wiring goes into the MP table that tells a Linux guest where
     * INTA# lands on the IOAPIC. */
    if (board_add_pci_irq(bus->host.dev.machine, slot, 1, pd->irq, errp) < 0) {
        return -1;
    }
    pd->slot = slot;
    pd->bus = bus;
    pthread_mutex_lock(&bus->lock);
    bus->slots[slot] = pd;
    pthread_mutex_unlock(&bus->lock);
    return 0;
}
