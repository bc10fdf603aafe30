/*
 * The contract between snapvm and its built-in guest: where the VMM loads the
 * guest image, the header at the start of that image, and the boot-info page
 * the VMM fills in before the first instruction.  Both sides include this
 * file, so it uses only fixed-width types and no host or guest headers.
 */
#ifndef SNAPVM_GUEST_ABI_H
#define SNAPVM_GUEST_ABI_H

#include <stdint.h>

/* Guest-physical layout below 2 MiB (the data region starts above the image). */
#define GUEST_BOOTINFO_ADDR 0x8000ULL   /* struct guest_boot_info, one page */
#define GUEST_PML4_ADDR     0x10000ULL  /* PML4, then PDPT, then page directories */
#define GUEST_PT_LIMIT      0x80000ULL  /* page tables end below this */
#define GUEST_LOAD_ADDR     0x100000ULL /* the image is linked and loaded here */

#define GUEST_IMAGE_MAGIC    0x54534756u           /* "VGST" */
#define GUEST_BOOTINFO_MAGIC 0x4f464e4942564d53ULL /* "SMVBINFO" */

/* First bytes of the flat image (section .header). */
struct guest_image_header {
    uint32_t magic;
    uint32_t version;
    uint64_t entry;     /* guest-physical entry point, 64-bit mode */
    uint64_t file_size; /* bytes of the image to copy */
    uint64_t mem_size;  /* bytes to reserve (file_size + bss), zeroed by the VMM */
};

#define GUEST_MAX_RAM_RANGES 4
#define GUEST_CMDLINE_MAX    2048

struct guest_ram_range {
    uint64_t base;
    uint64_t size;
};

struct guest_boot_info {
    uint64_t magic;
    uint32_t nr_ranges;
    uint32_t nr_cpus;
    struct guest_ram_range ranges[GUEST_MAX_RAM_RANGES];
    char cmdline[GUEST_CMDLINE_MAX]; /* the -append string, NUL-terminated */
};

/* The PCI hole: memory BARs are placed here by the VMM (acting as firmware). */
#define GUEST_PCI_MMIO_BASE 0xe0000000ULL
#define GUEST_PCI_MMIO_SIZE 0x10000000ULL
/* Guest RAM above this size continues at 4 GiB. */
#define GUEST_LOW_RAM_MAX   0xc0000000ULL
#define GUEST_HIGH_RAM_BASE 0x100000000ULL

#endif
