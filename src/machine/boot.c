/*
 * Booting: what is in guest RAM and in the boot vCPU when the guest starts.
 *
 * The built-in guest: copy its flat image to 1 MiB, write the boot-info page
 * (RAM ranges, the -append string), build identity-mapped page tables, and
 * put the boot vCPU straight into 64-bit long mode.
 *
 * -kernel: the file is a Linux bzImage (bzimage.c: the x86 boot protocol,
 * entered at its 64-bit entry in long mode with the same page tables and a
 * GDT with __BOOT_CS/__BOOT_DS) or a PVH ELF (pvh.c: entered in 32-bit
 * protected mode).  Either way the guest also gets an MP table (mptable.c)
 * for its CPUs and interrupt wiring, and one e820-style RAM map
 * (boot_e820_map) that both protocols hand over.  The other vCPUs wait for
 * INIT/SIPI in the in-kernel LAPIC (KVM starts them uninitialized).
 *
 * Entering long mode from the VMM (rather than from real mode in the guest)
 * matters on this host, where CPL0 guest code is emulated slowly: the guest
 * starts at its C entry with paging on.  Every page is mapped with the user
 * bit so that the guest's ring-3 half can touch all of RAM natively.
 */
#include "machine/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guest/abi.h"

extern const unsigned char snapvm_guest_image[];
extern const size_t snapvm_guest_image_size;

#define GDT_ADDR  0xf000ULL
#define PDPT_ADDR (GUEST_PML4_ADDR + 0x1000)
#define PD_ADDR   (GUEST_PML4_ADDR + 0x2000)

#define PTE_P  0x1ULL
#define PTE_RW 0x2ULL
#define PTE_US 0x4ULL
#define PTE_PS 0x80ULL

#define CR0_PE   0x1ULL
#define CR0_MP   0x2ULL
#define CR0_ET   0x10ULL
#define CR0_NE   0x20ULL
#define CR0_WP   0x10000ULL
#define CR0_PG   0x80000000ULL
#define CR4_PAE  0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL

static void *gpa(struct machine *m, uint64_t addr, uint64_t len)
{
    return guest_ram_ptr(&m->ram, addr, len);
}

static int build_page_tables(struct machine *m, struct error **errp)
{
    uint64_t top = GUEST_HIGH_RAM_BASE + (m->ram.size - m->ram.low_size);
    uint64_t nr_pd = (top + (1ULL << 30) - 1) >> 30;
    if (PD_ADDR + nr_pd * 4096 > GUEST_PT_LIMIT) {
        error_setg(errp, "guest RAM too large for the built-in guest's page tables");
        return -1;
    }
    uint64_t *pml4 = gpa(m, GUEST_PML4_ADDR, 4096);
    uint64_t *pdpt = gpa(m, PDPT_ADDR, 4096);
    memset(pml4, 0, 4096);
    memset(pdpt, 0, 4096);
    pml4[0] = PDPT_ADDR | PTE_P | PTE_RW | PTE_US;
    for (uint64_t i = 0; i < nr_pd; i++) {
        uint64_t *pd = gpa(m, PD_ADDR + i * 4096, 4096);
        pdpt[i] = (PD_ADDR + i * 4096) | PTE_P | PTE_RW | PTE_US;
        for (uint64_t j = 0; j < 512; j++) {
            pd[j] = ((i << 30) | (j << 21)) | PTE_P | PTE_RW | PTE_US | PTE_PS;
        }
    }
    /* A flat GDT matching the hidden segment state set in boot_setup_bsp(),
     * valid until the guest loads its own. */
    uint64_t *gdt = gpa(m, GDT_ADDR, 24);
    gdt[0] = 0;
    gdt[1] = 0x00af9a000000ffffULL;
    gdt[2] = 0x00cf92000000ffffULL;
    return 0;
}

/* Linux's 64-bit boot protocol wants flat __BOOT_CS at 0x10 and __BOOT_DS at
 * 0x18 (boot_setup_bsp loads the matching hidden state). */
#define LINUX_BOOT_CS 0x10
#define LINUX_BOOT_DS 0x18

static void write_linux_gdt(struct machine *m)
{
    uint64_t *gdt = gpa(m, GDT_ADDR, 32);
    gdt[0] = gdt[1] = 0;
    gdt[2] = 0x00af9b000000ffffULL; /* 64-bit code, execute/read, accessed */
    gdt[3] = 0x00cf93000000ffffULL; /* flat data, read/write, accessed */
}

int boot_read_file(const char *opt, const char *path, uint8_t **data, size_t *len,
                   struct error **errp)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "%s: '%s'", opt, path);
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    *len = (size_t)st.st_size;
    *data = malloc(*len ? *len : 1);
    if (!*data) {
        abort();
    }
    size_t done = 0;
    while (done < *len) {
        ssize_t n = read(fd, *data + done, *len - done);
        if (n <= 0) {
            error_setg_errno(errp, n < 0 ? errno : EIO, "%s: cannot read '%s'", opt, path);
            free(*data);
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    close(fd);
    return 0;
}

/*
 * The RAM map: conventional memory below 640 KiB, the BIOS area
 * 0xF0000-0xFFFFF reserved (it holds the MP table), RAM from 1 MiB to the
 * end of low RAM, and the rest above 4 GiB.  The PCI hole, IOAPIC and LAPIC
 * are not RAM and are not listed.
 */
unsigned boot_e820_map(const struct machine *m, struct boot_e820 *map)
{
    unsigned n = 0;
    map[n++] = (struct boot_e820){0, 0xa0000, 1};
    map[n++] = (struct boot_e820){0xf0000, 0x10000, 2};
    map[n++] = (struct boot_e820){0x100000, m->ram.low_size - 0x100000, 1};
    if (m->ram.size > m->ram.low_size) {
        map[n++] = (struct boot_e820){GUEST_HIGH_RAM_BASE, m->ram.size - m->ram.low_size, 1};
    }
    return n;
}

static int load_kernel(struct machine *m, struct error **errp)
{
    uint8_t *f = NULL;
    size_t len = 0;
    if (boot_read_file("-kernel", m->kernel, &f, &len, errp) < 0) {
        return -1;
    }
    int rc;
    m->kernel_bzimage = bzimage_is_bzimage(f, len);
    if (m->kernel_bzimage) {
        rc = bzimage_load(m, f, len, &m->kernel_entry, errp);
        if (rc == 0) {
            rc = build_page_tables(m, errp);
            write_linux_gdt(m);
        }
    } else if (pvh_is_elf(f, len)) {
        rc = pvh_load(m, f, len, &m->kernel_entry, errp);
    } else {
        error_setg(errp,
                   "-kernel: '%s' is neither a bzImage (no 'HdrS' setup header) nor a "
                   "little-endian ELF file (a PVH kernel such as vmlinux)",
                   m->kernel);
        rc = -1;
    }
    free(f);
    return rc < 0 ? -1 : mptable_write(m, errp);
}

static void write_boot_info(struct machine *m)
{
    struct guest_boot_info *bi = gpa(m, GUEST_BOOTINFO_ADDR, sizeof(*bi));
    memset(bi, 0, sizeof(*bi));
    bi->magic = GUEST_BOOTINFO_MAGIC;
    bi->nr_cpus = (uint32_t)m->nr_vcpus;
    bi->ranges[bi->nr_ranges++] = (struct guest_ram_range){0, m->ram.low_size};
    if (m->ram.size > m->ram.low_size) {
        bi->ranges[bi->nr_ranges++] =
                (struct guest_ram_range){GUEST_HIGH_RAM_BASE, m->ram.size - m->ram.low_size};
    }
    snprintf(bi->cmdline, sizeof(bi->cmdline), "%s", m->append);
}

int boot_load_guest(struct machine *m, struct error **errp)
{
    if (m->kernel) {
        return load_kernel(m, errp);
    }
    const struct guest_image_header *h = (const void *)snapvm_guest_image;
    if (snapvm_guest_image_size < sizeof(*h) || h->magic != GUEST_IMAGE_MAGIC ||
        h->mem_size < h->file_size) {
        error_setg(errp, "the built-in guest image is corrupt");
        return -1;
    }
    /* The image, its bss and the 2 MiB-aligned data region must fit. */
    uint64_t end = (GUEST_LOAD_ADDR + h->mem_size + 0x1fffff) & ~0x1fffffULL;
    if (end > m->ram.low_size) {
        error_setg(errp, "-m: too small for the built-in guest (needs more than %llu MiB)",
                   (unsigned long long)(end >> 20));
        return -1;
    }
    uint8_t *dst = gpa(m, GUEST_LOAD_ADDR, h->mem_size);
    /* objcopy drops trailing padding, so the blob may be shorter than file_size. */
    size_t copy = h->file_size < snapvm_guest_image_size ? h->file_size : snapvm_guest_image_size;
    memcpy(dst, snapvm_guest_image, copy);
    memset(dst + copy, 0, h->mem_size - copy);
    write_boot_info(m);
    return build_page_tables(m, errp);
}

static void flat_segment(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
    memset(s, 0, sizeof(*s));
    s->base = 0;
    s->limit = 0xffffffff;
    s->selector = sel;
    s->type = type;
    s->present = 1;
    s->dpl = 0;
    s->s = 1;
    s->g = 1;
    s->l = code ? 1 : 0;
    s->db = code ? 0 : 1;
}

static int setup_lapic(struct vcpu *v, struct error **errp)
{
    struct kvm_lapic_state l;
    if (ioctl(v->fd, KVM_GET_LAPIC, &l) < 0) {
        KVM_FAIL(errp, "KVM_GET_LAPIC");
        return -1;
    }
    /* LINT0 as ExtINT and LINT1 as NMI (virtual-wire mode, as firmware leaves
     * it): the in-kernel LAPIC then accepts interrupts from the 8259 PIC,
     * which the built-in guest uses for the PIT and the UART. */
    uint32_t *svr = (uint32_t *)&l.regs[0xf0];
    uint32_t *lvt0 = (uint32_t *)&l.regs[0x350];
    uint32_t *lvt1 = (uint32_t *)&l.regs[0x360];
    *svr = 0x1ff;
    *lvt0 = 0x700;
    *lvt1 = 0x400;
    if (ioctl(v->fd, KVM_SET_LAPIC, &l) < 0) {
        KVM_FAIL(errp, "KVM_SET_LAPIC");
        return -1;
    }
    return 0;
}

/*
 * The last step of every boot entry (built-in guest, PVH, bzImage): the
 * BSP's segments and control registers, then its general registers (entry
 * point and boot argument), then its LAPIC.
 */
static int enter_kernel(struct vcpu *v, struct kvm_sregs *sregs, struct kvm_regs *regs,
                        struct error **errp)
{
    if (ioctl(v->fd, KVM_SET_SREGS, sregs) < 0) {
        KVM_FAIL(errp, "KVM_SET_SREGS");
        return -1;
    }
    if (ioctl(v->fd, KVM_SET_REGS, regs) < 0) {
        KVM_FAIL(errp, "KVM_SET_REGS");
        return -1;
    }
    return setup_lapic(v, errp);
}

/*
 * The PVH entry state: 32-bit protected mode, paging off, flat 4 GiB code
 * and data segments, EBX = the hvm_start_info address.
 */
static int setup_pvh_bsp(struct machine *m, struct vcpu *v, struct kvm_sregs *sregs,
                         struct error **errp)
{
    flat_segment(&sregs->cs, 0x08, 0xb, false);
    flat_segment(&sregs->ds, 0x10, 0x3, false);
    sregs->es = sregs->fs = sregs->gs = sregs->ss = sregs->ds;
    sregs->gdt.base = GDT_ADDR;
    sregs->gdt.limit = 23;
    sregs->cr0 = CR0_PE | CR0_ET;
    sregs->cr3 = 0;
    sregs->cr4 = 0;
    sregs->efer = 0;
    uint64_t *gdt = gpa(m, GDT_ADDR, 24);
    gdt[0] = 0;
    gdt[1] = 0x00cf9a000000ffffULL; /* 32-bit code */
    gdt[2] = 0x00cf92000000ffffULL;
    struct kvm_regs regs = {.rip = m->kernel_entry, .rbx = pvh_start_info_addr(), .rflags = 0x2};
    return enter_kernel(v, sregs, &regs, errp);
}

/*
 * Linux's 64-bit boot protocol: long mode with paging on (the identity map
 * of build_page_tables covers the kernel, the zero page and the command
 * line), CS = __BOOT_CS, DS/ES/SS = __BOOT_DS, interrupts off, RSI = the
 * zero page.
 */
static int setup_bzimage_bsp(struct machine *m, struct vcpu *v, struct kvm_sregs *sregs,
                             struct error **errp)
{
    flat_segment(&sregs->cs, LINUX_BOOT_CS, 0xb, true);
    flat_segment(&sregs->ds, LINUX_BOOT_DS, 0x3, false);
    sregs->es = sregs->fs = sregs->gs = sregs->ss = sregs->ds;
    sregs->gdt.base = GDT_ADDR;
    sregs->gdt.limit = 31;
    sregs->cr3 = GUEST_PML4_ADDR;
    sregs->cr4 = CR4_PAE;
    sregs->cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs->efer = EFER_LME | EFER_LMA;
    struct kvm_regs regs = {.rip = m->kernel_entry, .rsi = bzimage_params_addr(), .rflags = 0x2};
    return enter_kernel(v, sregs, &regs, errp);
}

int boot_setup_bsp(struct machine *m, struct vcpu *v, struct error **errp)
{
    const struct guest_image_header *h = (const void *)snapvm_guest_image;
    struct kvm_sregs sregs;
    if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) {
        KVM_FAIL(errp, "KVM_GET_SREGS");
        return -1;
    }
    if (m->kernel) {
        return m->kernel_bzimage ? setup_bzimage_bsp(m, v, &sregs, errp)
                                 : setup_pvh_bsp(m, v, &sregs, errp);
    }
    flat_segment(&sregs.cs, 0x08, 0xb, true);
    flat_segment(&sregs.ds, 0x10, 0x3, false);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = 23;
    sregs.cr3 = GUEST_PML4_ADDR;
    sregs.cr4 = CR4_PAE;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
    struct kvm_regs regs = {.rip = h->entry, .rdi = GUEST_BOOTINFO_ADDR, .rflags = 0x2};
    return enter_kernel(v, &sregs, &regs, errp);
}
