/*
 * Instant restore (see restore.h): mapping a snapshot's RAM clusters into
 * guest memory, and turning them into private memory before the snapshot
 * can go away.
 */
#include "snapshot/restore.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "block/block.h"
#include "machine/machine.h"
#include "snapshot/ram.h"
#include "snapshot/vmstate.h"
#include "util/log.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PAGE VMSTATE_PAGE_SIZE

/*
 * Each mapped run becomes a mapping of its own (and splits the one around
 * it): stay well below the kernel's vm.max_map_count, leaving room for
 * everything else the process maps.
 */
static size_t max_mapped_runs(void)
{
    unsigned long max = 65530; /* the kernel's default */
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f) {
        if (fscanf(f, "%lu", &max) != 1) {
            max = 65530;
        }
        fclose(f);
    }
    return max > 8192 ? (max - 4096) / 2 : 0;
}

/*
 * What guest RAM maps from where, per machine.  It belongs to this layer
 * (the machine only owns the memory), under its own lock: a load replaces
 * it while a delete may look at it.  An entry lives from a machine's first
 * restore until vm_snapshot_forget().
 */
struct ram_mapping {
    struct machine *m;
    struct block_node *node; /* NULL: nothing is mapped */
    char snapshot_id[128];
    uint64_t *ranges; /* (offset, length) pairs in guest RAM */
    size_t nr_ranges;
    struct ram_mapping *next;
};

static pthread_mutex_t mappings_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ram_mapping *mappings;

/* Called with mappings_lock held. */
static struct ram_mapping *mapping_of(struct machine *m, bool create)
{
    for (struct ram_mapping *p = mappings; p; p = p->next) {
        if (p->m == m) {
            return p;
        }
    }
    if (!create) {
        return NULL;
    }
    struct ram_mapping *p = calloc(1, sizeof(*p));
    if (!p) {
        abort();
    }
    p->m = m;
    p->next = mappings;
    mappings = p;
    return p;
}

void restore_forget(struct machine *m)
{
    pthread_mutex_lock(&mappings_lock);
    for (struct ram_mapping **pp = &mappings; *pp; pp = &(*pp)->next) {
        if ((*pp)->m == m) {
            struct ram_mapping *p = *pp;
            *pp = p->next;
            free(p->ranges);
            free(p);
            break;
        }
    }
    pthread_mutex_unlock(&mappings_lock);
}

static bool page_aligned(uint64_t v)
{
    return v % PAGE == 0;
}

static void mapping_reset(struct ram_mapping *map)
{
    free(map->ranges);
    map->ranges = NULL;
    map->nr_ranges = 0;
    map->node = NULL;
    map->snapshot_id[0] = 0;
}

static void mapping_add(struct ram_mapping *map, uint64_t offset, uint64_t len)
{
    uint64_t *grown = realloc(map->ranges, (map->nr_ranges + 1) * 2 * sizeof(uint64_t));
    if (!grown) {
        abort();
    }
    map->ranges = grown;
    map->ranges[2 * map->nr_ranges] = offset;
    map->ranges[2 * map->nr_ranges + 1] = len;
    map->nr_ranges++;
}

/* One extent of the RAM section into guest RAM at `ram + offset`. */
static int restore_extent(struct block_node *node, const char *tag, const struct block_extent *e,
                          uint8_t *ram, uint64_t offset, struct ram_mapping *map,
                          struct error **errp)
{
    void *at = ram + offset;
    int fd = block_node_host_fd(node);
    if (e->kind == BLOCK_EXTENT_ZERO) {
        return 0; /* RAM was replaced by fresh zero pages already */
    }
    if (e->kind == BLOCK_EXTENT_DATA && fd >= 0 && page_aligned(offset) && page_aligned(e->len) &&
        page_aligned(e->host_offset)) {
        if (mmap(at, e->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd,
                 (off_t)e->host_offset) != MAP_FAILED) {
            mapping_add(map, offset, e->len);
            return 0;
        }
    }
    /* Not mappable (compressed, sub-page clusters) or the mapping failed: read. */
    if (block_snapshot_vmstate_read(node, tag, e->pos, at, e->len, errp) < 0) {
        error_prepend(errp, "reading guest RAM at 0x%llx from node '%s'",
                      (unsigned long long)offset, block_node_name(node));
        return -1;
    }
    return 0;
}

static int restore_ram_locked(struct machine *m, struct ram_mapping *map, struct block_node *node,
                              const char *tag, const char *id, uint8_t *ram, uint64_t ram_size,
                              uint64_t ram_offset, struct error **errp)
{
    /* Whatever was mapped before is about to be replaced entirely. */
    mapping_reset(map);
    struct block_extent *extents = NULL;
    size_t count = 0;
    if (!machine_ram_is_private(m) ||
        block_snapshot_vmstate_map(node, tag, ram_offset, ram_size, &extents, &count, NULL) < 0 ||
        count > max_mapped_runs()) {
        free(extents);
        return ram_load(node, tag, ram_offset, ram, ram_size, errp);
    }
    /*
     * One fresh anonymous mapping over all of RAM: every page reads as zero
     * (the snapshot's zero runs need nothing more), and whatever an earlier
     * restore mapped from an image is gone in the same call.
     */
    if (mmap(ram, ram_size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
        free(extents);
        error_setg_errno(errp, errno, "cannot replace guest RAM");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++) {
        rc = restore_extent(node, tag, &extents[i], ram, extents[i].pos - ram_offset, map, errp);
    }
    free(extents);
    if (map->nr_ranges) {
        map->node = node;
        snprintf(map->snapshot_id, sizeof(map->snapshot_id), "%s", id);
        log_debug("instant restore: %zu runs of snapshot %s mapped", map->nr_ranges, id);
    }
    return rc;
}

static int restore_release_locked(struct machine *m, struct ram_mapping *map,
                                  struct block_node *node, const char *id, struct error **errp)
{
    if (!map || map->node != node || strcmp(map->snapshot_id, id) != 0) {
        return 0;
    }
    uint8_t *ram = machine_ram(m, NULL);
    /*
     * A write fault on every page of a MAP_PRIVATE file mapping copies it
     * into anonymous memory without changing its content, even with the
     * guest running: afterwards nothing refers to the image's clusters.
     */
    for (size_t i = 0; i < map->nr_ranges; i++) {
        void *at = ram + map->ranges[2 * i];
        if (madvise(at, map->ranges[2 * i + 1], MADV_POPULATE_WRITE) < 0) {
            error_setg_errno(errp, errno,
                             "copying guest RAM mapped from snapshot '%s' on node '%s' before "
                             "deleting it",
                             id, block_node_name(node));
            return -1;
        }
    }
    mapping_reset(map);
    return 0;
}

int restore_ram(struct machine *m, struct block_node *node, const char *tag, const char *id,
                uint64_t ram_offset, struct error **errp)
{
    uint64_t ram_size;
    uint8_t *ram = machine_ram(m, &ram_size);
    pthread_mutex_lock(&mappings_lock);
    int rc = restore_ram_locked(m, mapping_of(m, true), node, tag, id, ram, ram_size, ram_offset,
                                errp);
    pthread_mutex_unlock(&mappings_lock);
    return rc;
}

int restore_release(struct machine *m, struct block_node *node, const char *id, struct error **errp)
{
    pthread_mutex_lock(&mappings_lock);
    int rc = restore_release_locked(m, mapping_of(m, false), node, id, errp);
    pthread_mutex_unlock(&mappings_lock);
    return rc;
}
