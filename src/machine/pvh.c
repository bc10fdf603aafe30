/*
 * -kernel: loading a PVH ELF kernel (the x86/HVM direct boot ABI of Xen,
 * which Linux and others implement): the PT_LOAD segments go to their
 * physical addresses, the entry point comes from the XEN_ELFNOTE_PHYS32_ENTRY
 * note, and the kernel finds an hvm_start_info structure (version 1, with a
 * memory map), its command line and an optional initrd module through EBX.
 * The boot vCPU starts in 32-bit protected mode with paging off
 * (boot_setup_bsp).  Layouts from Xen's public/arch-x86/hvm/start_info.h.
 *
 * boot.c reads the file and tells a PVH ELF from a bzImage (bzimage.c).
 * Tested with a small PVH kernel built by the tests and with the Linux test
 * kernel's vmlinux (tests/linux); see docs/machine.md.
 */
#include "machine/internal.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC          0x336ec578u

/* Guest-physical places of the boot data (below the usual 1 MiB load address). */
#define START_INFO_ADDR 0x6000ULL
#define MODLIST_ADDR    0x6100ULL
#define MEMMAP_ADDR     0x6200ULL
#define CMDLINE_ADDR    0x7000ULL
#define CMDLINE_MAX     0x1000ULL
#define KERNEL_MIN_ADDR 0x10000ULL /* the boot data and GDT live below */

struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct hvm_modlist_entry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};

struct hvm_memmap_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type; /* 1: RAM, 2: reserved */
    uint32_t reserved;
};

/* One loadable segment or note, whatever the ELF class. */
struct phdr {
    uint32_t type;
    uint64_t offset, paddr, filesz, memsz;
};

static bool get_phdr(const uint8_t *f, size_t len, bool is64, unsigned i, struct phdr *p)
{
    if (is64) {
        const Elf64_Ehdr *eh = (const void *)f;
        uint64_t off = eh->e_phoff + (uint64_t)i * eh->e_phentsize;
        if (eh->e_phentsize < sizeof(Elf64_Phdr) || off > len || len - off < sizeof(Elf64_Phdr)) {
            return false;
        }
        Elf64_Phdr ph;
        memcpy(&ph, f + off, sizeof(ph));
        *p = (struct phdr){ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz};
    } else {
        const Elf32_Ehdr *eh = (const void *)f;
        uint64_t off = eh->e_phoff + (uint64_t)i * eh->e_phentsize;
        if (eh->e_phentsize < sizeof(Elf32_Phdr) || off > len || len - off < sizeof(Elf32_Phdr)) {
            return false;
        }
        Elf32_Phdr ph;
        memcpy(&ph, f + off, sizeof(ph));
        *p = (struct phdr){ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz};
    }
    return true;
}

/* Find the PVH entry point in a PT_NOTE segment. */
static bool find_pvh_entry(const uint8_t *f, const struct phdr *p, uint64_t *entry)
{
    uint64_t pos = p->offset, end = p->offset + p->filesz;
    while (end - pos >= 12) {
        uint32_t namesz, descsz, type;
        memcpy(&namesz, f + pos, 4);
        memcpy(&descsz, f + pos + 4, 4);
        memcpy(&type, f + pos + 8, 4);
        uint64_t name = pos + 12;
        uint64_t desc = name + ((namesz + 3ULL) & ~3ULL);
        uint64_t next = desc + ((descsz + 3ULL) & ~3ULL);
        if (next > end) {
            return false;
        }
        if (namesz == 4 && memcmp(f + name, "Xen", 4) == 0 && type == XEN_ELFNOTE_PHYS32_ENTRY &&
            (descsz == 4 || descsz == 8)) {
            uint64_t v = 0;
            memcpy(&v, f + desc, descsz);
            *entry = descsz == 4 ? (uint32_t)v : v;
            return true;
        }
        pos = next;
    }
    return false;
}

static int load_segments(struct machine *m, const char *path, const uint8_t *f, size_t len,
                         uint64_t *entry, uint64_t *kernel_end, struct error **errp)
{
    bool is64 = f[EI_CLASS] == ELFCLASS64;
    unsigned phnum = is64 ? ((const Elf64_Ehdr *)f)->e_phnum : ((const Elf32_Ehdr *)f)->e_phnum;
    bool have_entry = false;
    *kernel_end = 0;
    for (unsigned i = 0; i < phnum; i++) {
        struct phdr p;
        if (!get_phdr(f, len, is64, i, &p) || p.offset > len || p.filesz > len - p.offset) {
            error_setg(errp, "-kernel: '%s': program header %u lies outside the file", path, i);
            return -1;
        }
        if (p.type == PT_NOTE && !have_entry) {
            have_entry = find_pvh_entry(f, &p, entry);
        }
        if (p.type != PT_LOAD) {
            continue;
        }
        uint8_t *dst = guest_ram_ptr(&m->ram, p.paddr, p.memsz);
        if (p.filesz > p.memsz || !dst || p.paddr < KERNEL_MIN_ADDR) {
            error_setg(errp,
                       "-kernel: '%s': segment %u (0x%llx+0x%llx) does not fit in guest RAM "
                       "above 64 KiB",
                       path, i, (unsigned long long)p.paddr, (unsigned long long)p.memsz);
            return -1;
        }
        memcpy(dst, f + p.offset, p.filesz);
        memset(dst + p.filesz, 0, p.memsz - p.filesz);
        if (p.paddr + p.memsz > *kernel_end) {
            *kernel_end = p.paddr + p.memsz;
        }
    }
    if (!have_entry) {
        error_setg(errp,
                   "-kernel: '%s' has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note); "
                   "only PVH ELF kernels are supported",
                   path);
        return -1;
    }
    return 0;
}

static void write_memmap(struct machine *m, struct hvm_start_info *si)
{
    struct boot_e820 map[BOOT_MAX_E820];
    unsigned n = boot_e820_map(m, map);
    struct hvm_memmap_entry *mm = guest_ram_ptr(&m->ram, MEMMAP_ADDR, n * sizeof(*mm));
    if (!mm) {
        return; /* cannot happen: RAM is at least 4 MiB */
    }
    for (unsigned i = 0; i < n; i++) {
        mm[i] = (struct hvm_memmap_entry){map[i].addr, map[i].size, map[i].type, 0};
    }
    si->memmap_paddr = MEMMAP_ADDR;
    si->memmap_entries = n;
}

bool pvh_is_elf(const uint8_t *f, size_t len)
{
    return len >= sizeof(Elf64_Ehdr) && memcmp(f, ELFMAG, SELFMAG) == 0 &&
           (f[EI_CLASS] == ELFCLASS64 || f[EI_CLASS] == ELFCLASS32) && f[EI_DATA] == ELFDATA2LSB;
}

int pvh_load(struct machine *m, const uint8_t *f, size_t len, uint64_t *entry, struct error **errp)
{
    uint64_t kernel_end = 0;
    if (load_segments(m, m->kernel, f, len, entry, &kernel_end, errp) < 0) {
        return -1;
    }
    struct hvm_start_info *si = guest_ram_ptr(&m->ram, START_INFO_ADDR, sizeof(*si));
    char *cmdline = guest_ram_ptr(&m->ram, CMDLINE_ADDR, CMDLINE_MAX);
    if (!si || !cmdline) {
        error_setg(errp, "-m: too small for -kernel");
        return -1;
    }
    memset(si, 0, sizeof(*si));
    si->magic = HVM_START_MAGIC;
    si->version = 1;
    snprintf(cmdline, CMDLINE_MAX, "%s", m->append);
    si->cmdline_paddr = CMDLINE_ADDR;
    write_memmap(m, si);
    if (m->initrd) {
        uint8_t *rd = NULL;
        size_t rd_len = 0;
        if (boot_read_file("-initrd", m->initrd, &rd, &rd_len, errp) < 0) {
            return -1;
        }
        /* At the top of low RAM, page-aligned, clear of the kernel. */
        uint64_t addr = (m->ram.low_size - rd_len) & ~0xfffULL;
        if (rd_len > m->ram.low_size || addr < kernel_end) {
            error_setg(errp, "-initrd: '%s' (%zu bytes) does not fit in guest RAM", m->initrd,
                       rd_len);
            free(rd);
            return -1;
        }
        memcpy(guest_ram_ptr(&m->ram, addr, rd_len), rd, rd_len);
        free(rd);
        struct hvm_modlist_entry *mod = guest_ram_ptr(&m->ram, MODLIST_ADDR, sizeof(*mod));
        if (mod) {
            *mod = (struct hvm_modlist_entry){addr, rd_len, 0, 0};
        }
        si->nr_modules = 1;
        si->modlist_paddr = MODLIST_ADDR;
    }
    return 0;
}

uint64_t pvh_start_info_addr(void)
{
    return START_INFO_ADDR;
}
