/*
 * Instant restore (see restore.h): staging a snapshot's RAM beside guest
 * memory (a plan of the clusters to map, and everything that must be read,
 * read into a staging area), putting it in place, and turning mapped pages
 * into private memory before the snapshot can go away.
 */
#include "snapshot/restore.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

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

/*
 * Can this DATA extent be mapped straight from the image file?  A page-
 * aligned run of clusters of at least a page can; a compressed cluster, a
 * cluster smaller than a page, or RAM that is a shared file cannot.
 */
static bool extent_mappable(const struct ram_stage *st, const struct block_extent *e)
{
    return st->fd >= 0 && e->kind == BLOCK_EXTENT_DATA && page_aligned(e->pos - st->ram_offset) &&
           page_aligned(e->len) && page_aligned(e->host_offset);
}

void restore_stage_free(struct ram_stage *st)
{
    if (st->buf && st->buf != MAP_FAILED) {
        munmap(st->buf, st->ram_size);
    }
    st->buf = NULL;
    free(st->extents);
    st->extents = NULL;
    free(st->mapped);
    st->mapped = NULL;
}

/* Read bytes [pos, pos + len) of the vmstate into the staging buffer. */
static int stage_read(struct ram_stage *st, uint64_t pos, uint64_t len, struct error **errp)
{
    uint64_t off = pos - st->ram_offset;
    if (block_snapshot_vmstate_read(st->node, st->tag, pos, st->buf + off, len, errp) < 0) {
        error_prepend(errp, "reading guest RAM at 0x%llx from node '%s'", (unsigned long long)off,
                      block_node_name(st->node));
        return -1;
    }
    return 0;
}

/* The mapping plan, with every extent read that cannot be mapped. */
static int stage_extents(struct ram_stage *st, struct error **errp)
{
    struct stat sb;
    if (fstat(st->fd, &sb) < 0) {
        error_setg_errno(errp, errno, "node '%s': cannot stat the image file",
                         block_node_name(st->node));
        return -1;
    }
    st->mapped = calloc(st->count ? st->count : 1, sizeof(*st->mapped));
    if (!st->mapped) {
        abort();
    }
    for (size_t i = 0; i < st->count; i++) {
        const struct block_extent *e = &st->extents[i];
        if (e->kind == BLOCK_EXTENT_ZERO) {
            continue;
        }
        /*
         * A mapped page past the end of the file would fault (SIGBUS, or
         * a vCPU stuck on a page KVM cannot fill) only when the guest
         * touches it: refuse such an image now, before anything changes.
         */
        if (e->kind == BLOCK_EXTENT_DATA && (e->host_offset > (uint64_t)sb.st_size ||
                                             e->len > (uint64_t)sb.st_size - e->host_offset)) {
            error_setg(errp,
                       "node '%s': snapshot '%s' stores guest RAM at 0x%llx at file offset "
                       "0x%llx, past the end of the image file (%llu bytes): the image is corrupt",
                       block_node_name(st->node), st->tag,
                       (unsigned long long)(e->pos - st->ram_offset),
                       (unsigned long long)e->host_offset, (unsigned long long)sb.st_size);
            return -1;
        }
        if (extent_mappable(st, e)) {
            st->mapped[i] = true;
        } else if (stage_read(st, e->pos, e->len, errp) < 0) {
            return -1;
        }
    }
    return 0;
}

int restore_stage(struct machine *m, struct block_node *node, const char *tag, const char *id,
                  uint64_t ram_offset, struct ram_stage *st, struct error **errp)
{
    memset(st, 0, sizeof(*st));
    machine_ram(m, &st->ram_size);
    st->node = node;
    st->tag = tag;
    snprintf(st->id, sizeof(st->id), "%s", id);
    st->ram_offset = ram_offset;
    st->fd = machine_ram_is_private(m) ? block_node_host_fd(node) : -1;
    /*
     * The staging area: as large as RAM, but only what is read into it
     * takes memory (MAP_NORESERVE, untouched pages are never allocated).
     */
    st->buf = mmap(NULL, st->ram_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (st->buf == MAP_FAILED) {
        st->buf = NULL;
        error_setg_errno(errp, errno, "cannot reserve %llu bytes to stage guest RAM",
                         (unsigned long long)st->ram_size);
        return -1;
    }
    int rc;
    if (st->fd >= 0 &&
        block_snapshot_vmstate_map(node, tag, ram_offset, st->ram_size, &st->extents, &st->count,
                                   NULL) == 0 &&
        st->count <= max_mapped_runs()) {
        rc = stage_extents(st, errp);
    } else {
        /* Read it all: RAM is a shared file (-mem-path), or too many runs. */
        free(st->extents);
        st->extents = NULL;
        st->count = 0;
        st->whole = true;
        rc = ram_load(node, tag, ram_offset, st->buf, st->ram_size, errp);
    }
    if (rc < 0) {
        restore_stage_free(st);
    }
    return rc;
}

static int commit_locked(struct machine *m, struct ram_mapping *map, struct ram_stage *st,
                         struct error **errp)
{
    uint8_t *ram = machine_ram(m, NULL);
    /* Whatever was mapped before is replaced entirely. */
    mapping_reset(map);
    if (st->whole && !machine_ram_is_private(m)) {
        memcpy(ram, st->buf, st->ram_size); /* RAM is the -mem-path file */
        return 0;
    }
    if (st->whole) {
        /* The staged pages become guest RAM as they are: no copy. */
        if (mremap(st->buf, st->ram_size, st->ram_size, MREMAP_MAYMOVE | MREMAP_FIXED, ram) ==
            MAP_FAILED) {
            memcpy(ram, st->buf, st->ram_size); /* cannot fail: only slower */
        } else {
            st->buf = NULL; /* now guest RAM */
        }
        return 0;
    }
    /*
     * One fresh anonymous mapping over all of RAM: every page reads as zero
     * (the snapshot's zero runs need nothing more), and whatever an earlier
     * restore mapped from an image is gone in the same call.
     */
    if (mmap(ram, st->ram_size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot replace guest RAM");
        return -1;
    }
    for (size_t i = 0; i < st->count; i++) {
        const struct block_extent *e = &st->extents[i];
        uint64_t off = e->pos - st->ram_offset;
        if (e->kind == BLOCK_EXTENT_ZERO) {
            continue;
        }
        if (!st->mapped[i]) {
            memcpy(ram + off, st->buf + off, e->len);
            continue;
        }
        if (mmap(ram + off, e->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE,
                 st->fd, (off_t)e->host_offset) == MAP_FAILED) {
            error_setg_errno(errp, errno, "cannot map guest RAM at 0x%llx from node '%s'",
                             (unsigned long long)off, block_node_name(st->node));
            return -1;
        }
        mapping_add(map, off, e->len);
    }
    if (map->nr_ranges) {
        map->node = st->node;
        snprintf(map->snapshot_id, sizeof(map->snapshot_id), "%s", st->id);
        log_debug("instant restore: %zu runs of snapshot %s mapped", map->nr_ranges, st->id);
    }
    return 0;
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

int restore_commit(struct machine *m, struct ram_stage *st, struct error **errp)
{
    pthread_mutex_lock(&mappings_lock);
    int rc = commit_locked(m, mapping_of(m, true), st, errp);
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
