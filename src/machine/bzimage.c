/*
 * -kernel: loading a Linux bzImage by the x86 boot protocol
 * (Documentation/x86/boot.rst and zero-page.rst in Linux's tree), entered
 * through the 64-bit boot protocol, so that no real-mode or 32-bit code of
 * the kernel's setup runs (which matters where CPL0 guest code is emulated).
 *
 * What a 64-bit boot loader does, and this file does:
 * - check the setup header (boot_flag 0xAA55, "HdrS", protocol 2.12 or
 *   later, XLF_KERNEL_64 in xloadflags); the protected-mode kernel starts at
 *   file offset (setup_sects + 1) * 512 (setup_sects 0 means 4);
 * - load it at pref_address if the kernel is relocatable (else at 1 MiB,
 *   from where it moves itself to pref_address), with init_size bytes of
 *   RAM from where it will run;
 * - build a zeroed boot_params ("zero page") holding a copy of the setup
 *   header (from 0x1f1 to 0x202 + the byte at 0x201), then fill in
 *   type_of_loader (0xff: undefined), cmd_line_ptr, ramdisk_image and
 *   ramdisk_size, and the e820 map;
 * - enter at the load address + 0x200 in 64-bit mode with the kernel, the
 *   zero page and the command line identity-mapped, a GDT with flat
 *   __BOOT_CS (0x10) and __BOOT_DS (0x18), interrupts off, and RSI holding
 *   the zero page's address (boot.c sets up the vCPU).
 * The structures come from Linux's UAPI header <asm/bootparam.h>.
 */
#include "machine/internal.h"

#include <asm/bootparam.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Guest-physical places of the boot data: the zero page, then the command
 * line below the 640 KiB line, clear of the page tables (boot.c). */
#define PARAMS_ADDR      0x7000ULL
#define CMDLINE_ADDR     0x80000ULL
#define CMDLINE_MAX      0x10000ULL
#define HDR_OFFSET       0x1f1
#define BOOT_FLAG        0xaa55
#define HDR_MAGIC        0x53726448u /* "HdrS" */
#define MIN_VERSION      0x020c      /* 2.12: xloadflags, the 64-bit entry */
#define ENTRY64_OFFSET   0x200
#define DEFAULT_LOAD     0x100000ULL
#define LOADER_UNDEFINED 0xff

_Static_assert(sizeof(struct boot_params) == 4096, "the zero page is one page");
_Static_assert(offsetof(struct boot_params, hdr) == HDR_OFFSET, "setup header offset");
_Static_assert(offsetof(struct boot_params, e820_table) == 0x2d0, "e820 table offset");

bool bzimage_is_bzimage(const uint8_t *f, size_t len)
{
    uint16_t flag;
    uint32_t magic;
    if (len < HDR_OFFSET + sizeof(struct setup_header)) {
        return false;
    }
    memcpy(&flag, f + offsetof(struct boot_params, hdr.boot_flag), 2);
    memcpy(&magic, f + offsetof(struct boot_params, hdr.header), 4);
    return flag == BOOT_FLAG && magic == HDR_MAGIC;
}

uint64_t bzimage_params_addr(void)
{
    return PARAMS_ADDR;
}

int bzimage_load(struct machine *m, const uint8_t *f, size_t len, uint64_t *entry,
                 struct error **errp)
{
    const char *path = m->kernel;
    struct setup_header h;
    /* The header ends at 0x202 + the byte at 0x201 (the jump at 0x200 skips
     * it); an older header is shorter than today's struct, the rest zero. */
    size_t hdr_len = 0x202 + f[0x201] - HDR_OFFSET;
    if (hdr_len > sizeof(h)) {
        hdr_len = sizeof(h);
    }
    memset(&h, 0, sizeof(h));
    memcpy(&h, f + HDR_OFFSET, hdr_len);
    if (h.version < MIN_VERSION || !(h.xloadflags & XLF_KERNEL_64)) {
        error_setg(errp,
                   "-kernel: '%s' has boot protocol %u.%02u%s; the 64-bit entry needs 2.12 or "
                   "later with XLF_KERNEL_64 (a 64-bit kernel)",
                   path, h.version >> 8, h.version & 0xff,
                   h.xloadflags & XLF_KERNEL_64 ? "" : " without a 64-bit entry");
        return -1;
    }
    uint64_t setup_sects = h.setup_sects ? h.setup_sects : 4;
    uint64_t pm_off = (setup_sects + 1) * 512;
    if (pm_off >= len) {
        error_setg(errp, "-kernel: '%s': %llu setup sectors, but the file has only %zu bytes", path,
                   (unsigned long long)setup_sects, len);
        return -1;
    }
    uint64_t pm_size = len - pm_off;
    /* A relocatable kernel runs where it is loaded, so load it at its
     * preferred address; a non-relocatable one is loaded at 1 MiB and moves
     * itself to pref_address.  Either way init_size bytes from where it
     * runs must be RAM, and nothing else may be put there. */
    uint64_t load = DEFAULT_LOAD;
    uint64_t run = h.pref_address ? h.pref_address : DEFAULT_LOAD;
    if (h.relocatable_kernel) {
        load = run;
    }
    uint64_t end = load + pm_size;
    if (run + h.init_size > end) {
        end = run + h.init_size;
    }
    uint8_t *dst = guest_ram_ptr(&m->ram, load, pm_size);
    if (run < DEFAULT_LOAD) {
        error_setg(errp, "-kernel: '%s' wants to run at 0x%llx, below 1 MiB", path,
                   (unsigned long long)run);
        return -1;
    }
    if (!dst || end > m->ram.low_size) {
        error_setg(errp, "-m: too small for -kernel '%s' (it needs RAM up to %llu MiB)", path,
                   (unsigned long long)((end + (1 << 20) - 1) >> 20));
        return -1;
    }
    memcpy(dst, f + pm_off, pm_size);

    struct boot_params *bp = guest_ram_ptr(&m->ram, PARAMS_ADDR, sizeof(*bp));
    char *cmdline = guest_ram_ptr(&m->ram, CMDLINE_ADDR, CMDLINE_MAX);
    if (!bp || !cmdline) {
        error_setg(errp, "-m: too small for -kernel '%s'", path);
        return -1;
    }
    memset(bp, 0, sizeof(*bp));
    memcpy(&bp->hdr, &h, hdr_len);
    bp->hdr.type_of_loader = LOADER_UNDEFINED;
    /* No real-mode setup code runs: nothing to say about its heap. */
    bp->hdr.loadflags &= (uint8_t)~CAN_USE_HEAP;
    bp->hdr.setup_data = 0;

    size_t cmd_len = strlen(m->append);
    uint64_t cmd_max = h.cmdline_size ? h.cmdline_size : 255; /* 255: before 2.06 */
    if (cmd_max > CMDLINE_MAX - 1) {
        cmd_max = CMDLINE_MAX - 1;
    }
    if (cmd_len > cmd_max) {
        error_setg(errp, "-append: %zu bytes, but -kernel '%s' takes at most %llu", cmd_len, path,
                   (unsigned long long)cmd_max);
        return -1;
    }
    memcpy(cmdline, m->append, cmd_len + 1);
    bp->hdr.cmd_line_ptr = (uint32_t)CMDLINE_ADDR;

    if (m->initrd) {
        uint8_t *rd = NULL;
        size_t rd_len = 0;
        if (boot_read_file("-initrd", m->initrd, &rd, &rd_len, errp) < 0) {
            return -1;
        }
        /* As high as the kernel allows, page-aligned, clear of the kernel. */
        uint64_t top = m->ram.low_size;
        if (h.initrd_addr_max && (uint64_t)h.initrd_addr_max + 1 < top) {
            top = (uint64_t)h.initrd_addr_max + 1;
        }
        uint64_t addr = rd_len <= top ? (top - rd_len) & ~0xfffULL : 0;
        if (rd_len > top || addr < end) {
            error_setg(errp, "-initrd: '%s' (%zu bytes) does not fit in guest RAM below %llu MiB",
                       m->initrd, rd_len, (unsigned long long)(top >> 20));
            free(rd);
            return -1;
        }
        memcpy(guest_ram_ptr(&m->ram, addr, rd_len), rd, rd_len);
        free(rd);
        bp->hdr.ramdisk_image = (uint32_t)addr;
        bp->hdr.ramdisk_size = (uint32_t)rd_len;
    }

    struct boot_e820 map[BOOT_MAX_E820];
    unsigned n = boot_e820_map(m, map);
    for (unsigned i = 0; i < n; i++) {
        bp->e820_table[i].addr = map[i].addr;
        bp->e820_table[i].size = map[i].size;
        bp->e820_table[i].type = map[i].type;
    }
    bp->e820_entries = (uint8_t)n;
    *entry = load + ENTRY64_OFFSET;
    return 0;
}
