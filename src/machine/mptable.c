/*
 * The MP table (Intel MultiProcessor Specification 1.4): how a guest
 * without ACPI, such as snapvm's Linux test kernel, finds its CPUs, its
 * IOAPIC and the wiring of every interrupt line.  Linux's mpparse scans the
 * BIOS area 0xF0000-0xFFFFF for the floating pointer ("_MP_"), which points
 * at the configuration table ("PCMP") right behind it.  boot.c reserves the
 * area in the e820 map.
 *
 * What the table says, and why:
 * - one processor entry per vCPU, LAPIC id = vCPU index (vcpu.c sets the
 *   same id in CPUID), vCPU 0 the boot processor: Linux starts the others
 *   with INIT/SIPI, which the in-kernel LAPIC handles;
 * - bus 0 is PCI, bus 1 is ISA;
 * - the in-kernel IOAPIC (KVM_CREATE_IRQCHIP) at 0xFEC00000 with
 *   KVM's default routing: GSI n is IOAPIC pin n (and PIC line n for n < 16),
 *   so ISA IRQ n is pin n, the PIT's IRQ 0 included;
 * - each PCI INTx route a device declared (board_add_pci_irq): level
 *   triggered, active high, which is how snapvm drives the line;
 * - LINT0 ExtINT and LINT1 NMI on every LAPIC (virtual-wire mode, no IMCR).
 */
#include "machine/internal.h"

#include <stddef.h>
#include <string.h>

#define MP_BASE        0xf0000ULL
#define MP_AREA_SIZE   0x10000ULL
#define LAPIC_ADDR     0xfee00000u
#define IOAPIC_ADDR    0xfec00000u
#define LAPIC_VERSION  0x14 /* what KVM's LAPIC version register reads */
#define IOAPIC_VERSION 0x11 /* KVM's IOAPIC */
#define BUS_PCI        0
#define BUS_ISA        1
#define MP_SPEC_REV    4 /* version 1.4 */
#define CPU_ENABLED    0x1
#define CPU_BOOTPROC   0x2
#define IRQ_INT        0
#define IRQ_NMI        1
#define IRQ_EXTINT     3
#define POLARITY_HIGH  0x1
#define TRIGGER_LEVEL  (0x3 << 2)
#define FLAGS_CONFORM  0 /* "conforms to the bus": ISA is edge, active high */
#define ALL_LAPICS     0xff

/* Layouts from the MP specification, chapter 4. */
struct mp_floating {
    char signature[4]; /* "_MP_" */
    uint32_t config_addr;
    uint8_t length; /* in 16-byte units */
    uint8_t spec_rev;
    uint8_t checksum;
    uint8_t features[5]; /* [0] = 0: a configuration table follows; [1] bit 7: IMCR */
} __attribute__((packed));

struct mp_config {
    char signature[4]; /* "PCMP" */
    uint16_t length;   /* the base table, entries included */
    uint8_t spec_rev;
    uint8_t checksum;
    char oem_id[8];
    char product_id[12];
    uint32_t oem_table;
    uint16_t oem_table_size;
    uint16_t entry_count;
    uint32_t lapic_addr;
    uint16_t ext_length;
    uint8_t ext_checksum;
    uint8_t reserved;
} __attribute__((packed));

struct mp_cpu {
    uint8_t type; /* 0 */
    uint8_t lapic_id;
    uint8_t lapic_version;
    uint8_t flags;
    uint32_t signature; /* CPUID 1 EAX */
    uint32_t features;  /* CPUID 1 EDX */
    uint32_t reserved[2];
} __attribute__((packed));

struct mp_bus {
    uint8_t type; /* 1 */
    uint8_t id;
    char name[6]; /* "PCI   ", "ISA   " */
} __attribute__((packed));

struct mp_ioapic {
    uint8_t type; /* 2 */
    uint8_t id;
    uint8_t version;
    uint8_t flags; /* bit 0: usable */
    uint32_t addr;
} __attribute__((packed));

/* Type 3 (I/O interrupt) and type 4 (local interrupt) share one layout. */
struct mp_irq {
    uint8_t type;
    uint8_t irq_type;
    uint16_t flags;
    uint8_t src_bus;
    uint8_t src_irq; /* ISA: the IRQ; PCI: slot << 2 | (pin - 1) */
    uint8_t dst_apic;
    uint8_t dst_pin;
} __attribute__((packed));

_Static_assert(sizeof(struct mp_floating) == 16, "MP floating pointer");
_Static_assert(sizeof(struct mp_config) == 44, "MP configuration table header");
_Static_assert(sizeof(struct mp_cpu) == 20, "MP processor entry");
_Static_assert(sizeof(struct mp_bus) == 8 && sizeof(struct mp_ioapic) == 8 &&
                       sizeof(struct mp_irq) == 8,
               "MP 8-byte entries");

static uint8_t checksum(const void *p, size_t len)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++) {
        sum = (uint8_t)(sum + ((const uint8_t *)p)[i]);
    }
    return (uint8_t)-sum;
}

struct writer {
    uint8_t *base;
    size_t pos;
    uint16_t count;
};

static void put(struct writer *w, const void *entry, size_t len)
{
    memcpy(w->base + w->pos, entry, len);
    w->pos += len;
    w->count++;
}

static bool gsi_is_pci(const struct machine *m, unsigned gsi)
{
    for (unsigned i = 0; i < m->nr_pci_irqs; i++) {
        if (m->pci_irqs[i].gsi == gsi) {
            return true;
        }
    }
    return false;
}

int mptable_write(struct machine *m, struct error **errp)
{
    /* Worst case: every entry type at its maximum count. */
    size_t need = sizeof(struct mp_floating) + sizeof(struct mp_config) +
                  (size_t)m->nr_vcpus * sizeof(struct mp_cpu) + 2 * sizeof(struct mp_bus) +
                  sizeof(struct mp_ioapic) + (16 + BOARD_MAX_PCI_IRQS + 2) * sizeof(struct mp_irq);
    uint8_t *area = guest_ram_ptr(&m->ram, MP_BASE, MP_AREA_SIZE);
    if (m->nr_vcpus > ALL_LAPICS - 1 || need > MP_AREA_SIZE) {
        error_setg(errp, "-smp %d: too many CPUs for the MP table", m->nr_vcpus);
        return -1;
    }
    if (!area) {
        error_setg(errp, "-m: too small for the MP table at 0x%llx", (unsigned long long)MP_BASE);
        return -1;
    }
    memset(area, 0, MP_AREA_SIZE);
    struct mp_floating *mpf = (void *)area;
    struct writer w = {area + sizeof(*mpf) + sizeof(struct mp_config), 0, 0};
    uint8_t ioapic_id = (uint8_t)m->nr_vcpus; /* the first id after the LAPICs' */

    for (int i = 0; i < m->nr_vcpus; i++) {
        struct mp_cpu c = {
                .type = 0,
                .lapic_id = (uint8_t)i,
                .lapic_version = LAPIC_VERSION,
                .flags = CPU_ENABLED | (i == 0 ? CPU_BOOTPROC : 0),
                .signature = 0x600, /* family 6: informational only */
                .features = 0x201,  /* FPU, APIC */
        };
        put(&w, &c, sizeof(c));
    }
    struct mp_bus pci = {1, BUS_PCI, {'P', 'C', 'I', ' ', ' ', ' '}};
    struct mp_bus isa = {1, BUS_ISA, {'I', 'S', 'A', ' ', ' ', ' '}};
    put(&w, &pci, sizeof(pci));
    put(&w, &isa, sizeof(isa));
    struct mp_ioapic io = {2, ioapic_id, IOAPIC_VERSION, 1, IOAPIC_ADDR};
    put(&w, &io, sizeof(io));
    /* ISA IRQs 0-15, identity-mapped to IOAPIC pins; 2 is the PIC cascade,
     * and lines that carry PCI interrupts are listed as PCI only. */
    for (unsigned irq = 0; irq < 16; irq++) {
        if (irq == 2 || gsi_is_pci(m, irq)) {
            continue;
        }
        struct mp_irq e = {3,         IRQ_INT,     FLAGS_CONFORM, BUS_ISA, (uint8_t)irq,
                           ioapic_id, (uint8_t)irq};
        put(&w, &e, sizeof(e));
    }
    for (unsigned i = 0; i < m->nr_pci_irqs; i++) {
        const struct board_pci_irq *r = &m->pci_irqs[i];
        struct mp_irq e = {3,
                           IRQ_INT,
                           POLARITY_HIGH | TRIGGER_LEVEL,
                           BUS_PCI,
                           (uint8_t)(r->slot << 2 | (r->pin - 1)),
                           ioapic_id,
                           r->gsi};
        put(&w, &e, sizeof(e));
    }
    struct mp_irq lint0 = {4, IRQ_EXTINT, FLAGS_CONFORM, BUS_ISA, 0, ALL_LAPICS, 0};
    struct mp_irq lint1 = {4, IRQ_NMI, FLAGS_CONFORM, BUS_ISA, 0, ALL_LAPICS, 1};
    put(&w, &lint0, sizeof(lint0));
    put(&w, &lint1, sizeof(lint1));

    struct mp_config *cfg = (void *)(area + sizeof(*mpf));
    memcpy(cfg->signature, "PCMP", 4);
    cfg->length = (uint16_t)(sizeof(*cfg) + w.pos);
    cfg->spec_rev = MP_SPEC_REV;
    memcpy(cfg->oem_id, "SNAPVM  ", 8);
    memcpy(cfg->product_id, "SNAPVM      ", 12);
    cfg->entry_count = w.count;
    cfg->lapic_addr = LAPIC_ADDR;
    cfg->checksum = checksum(cfg, cfg->length);

    memcpy(mpf->signature, "_MP_", 4);
    mpf->config_addr = (uint32_t)(MP_BASE + sizeof(*mpf));
    mpf->length = 1;
    mpf->spec_rev = MP_SPEC_REV;
    mpf->checksum = checksum(mpf, sizeof(*mpf));
    return 0;
}
