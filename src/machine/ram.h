/*
 * Guest RAM as seen by device models: one host buffer, mapped at guest
 * physical 0 up to `low_size` and continued at 4 GiB for the rest (the gap
 * below 4 GiB holds the PCI hole, the IOAPIC and the LAPIC).  guest_ram_ptr()
 * is the only way a device turns a guest address into a host pointer: it
 * rejects ranges that are not wholly inside one RAM range.
 */
#ifndef SNAPVM_MACHINE_RAM_H
#define SNAPVM_MACHINE_RAM_H

#include <stdint.h>

#include "guest/abi.h"

struct guest_ram {
    uint8_t *host;
    uint64_t size;
    uint64_t low_size;
};

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
