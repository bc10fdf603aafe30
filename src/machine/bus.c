/*
 * The I/O bus: the table of port-I/O and MMIO regions that devices register,
 * and the dispatch of vCPU exits to them.  The table is built before the
 * vCPUs start and never changes afterwards, so lookups take no lock.
 * (PCI BARs, which the guest can move, are one region owned by the PCI host
 * bridge, which decodes them itself.)
 */
#include "machine/internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

int machine_add_io(struct machine *m, enum io_space space, uint64_t base, uint64_t len, io_fn fn,
                   struct device *dev, struct error **errp)
{
    for (size_t i = 0; i < m->nr_regions; i++) {
        struct io_region *r = &m->regions[i];
        if (r->space == space && base < r->base + r->len && r->base < base + len) {
            error_setg(errp, "%s: I/O range 0x%llx+0x%llx overlaps %s", dev->id,
                       (unsigned long long)base, (unsigned long long)len, r->dev->id);
            return -1;
        }
    }
    struct io_region *n = realloc(m->regions, (m->nr_regions + 1) * sizeof(*n));
    if (!n) {
        abort();
    }
    m->regions = n;
    m->regions[m->nr_regions++] =
            (struct io_region){.space = space, .base = base, .len = len, .fn = fn, .dev = dev};
    return 0;
}

void bus_io(struct machine *m, enum io_space space, uint64_t addr, uint8_t *data, uint32_t len,
            bool is_write)
{
    for (size_t i = 0; i < m->nr_regions; i++) {
        struct io_region *r = &m->regions[i];
        if (r->space == space && addr >= r->base && addr - r->base < r->len) {
            r->fn(r->dev, addr - r->base, data, len, is_write);
            return;
        }
    }
    if (!is_write) {
        memset(data, 0xff, len);
    }
    log_debug("unhandled %s %s at 0x%llx (%u bytes)", space == IO_SPACE_PIO ? "port" : "MMIO",
              is_write ? "write" : "read", (unsigned long long)addr, len);
}
