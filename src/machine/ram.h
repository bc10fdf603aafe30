/*
 * Guest RAM as seen by device models: one host buffer, mapped at guest
 * physical 0 up to `low_size` and continued at 4 GiB for the rest (the gap
 * below 4 GiB holds the PCI hole, the IOAPIC and the LAPIC).  guest_ram_ptr()
 * is the only way a device turns a guest address into a host pointer: it
 * rejects ranges that are not wholly inside one RAM range.
 */
#ifndef SNAPVM_MACHINE_RAM_H
#define SNAPVM_MACHINE_RAM_H

#include <stdbool.h>
#include <stdint.h>

#include "guest/abi.h"

struct guest_ram {
    uint8_t *host;
    uint64_t size;
    uint64_t low_size;
    bool shared_file; /* -mem-path: the RAM is the file, not private memory */
    int file_fd;      /* and that file, open while the machine lives (-1: none) */
    /* While dirty tracking is on (machine_dirty_log_start): one bit per
     * page of `host`, set by device models that write guest RAM. */
    uint64_t *dirty;
};

/* Record that a device model wrote [ptr, ptr+len) of guest RAM. */
static inline void guest_ram_mark_dirty(const struct guest_ram *r, const void *ptr, uint64_t len)
{
    uint64_t *bm = __atomic_load_n(&r->dirty, __ATOMIC_ACQUIRE);
    if (!bm || !len) {
        return;
    }
    uint64_t first = (uint64_t)((const uint8_t *)ptr - r->host) >> 12;
    uint64_t last = ((uint64_t)((const uint8_t *)ptr - r->host) + len - 1) >> 12;
    for (uint64_t p = first; p <= last; p++) {
        __atomic_or_fetch(&bm[p / 64], 1ULL << (p % 64), __ATOMIC_RELAXED);
    }
}

static inline void *guest_ram_ptr(const struct guest_ram *r, uint64_t gpa, uint64_t len)
{
    if (len > r->size) {
        return 0;
    }
    if (gpa < r->low_size) {
        return len <= r->low_size - gpa ? r->host + gpa : 0;
    }
    if (gpa >= GUEST_HIGH_RAM_BASE) {
        uint64_t off = gpa - GUEST_HIGH_RAM_BASE;
        uint64_t high = r->size - r->low_size;
        return off < high && len <= high - off ? r->host + r->low_size + off : 0;
    }
    return 0;
}

#endif
