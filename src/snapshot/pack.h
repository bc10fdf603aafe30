/*
 * Packed RAM clusters (vmstate version 3).
 *
 * The RAM section keeps page i at ram_offset + i * 4096 (vmstate.h), and a
 * zero page is never written.  Where a cluster holds zero and non-zero
 * pages mixed, that left a hole in the file per zero page; a file system
 * then keeps an extent per stretch of data, and with zero pages interleaved
 * at 4 KiB (as guest RAM often is) every data page was an allocation of its
 * own: measured on ext4, a save of such RAM ran at a fifth of the disk's
 * bandwidth, slower than QEMU writing all of it as one stream.
 *
 * So a save *packs* such a cluster: its non-zero pages go one after another
 * into the pack area (each a *slot*), which is written as one dense stream,
 * and its place in the RAM section stays a hole.  The pack map has an entry
 * per packed cluster: where its first slot is, and a bit per page: its
 * pages with a bit set take its slots in page order; the others are zero.  A cluster full of data,
 * or all zero, is stored in place as before, so that a load still maps it straight from the image.
 * A packed cluster cannot be mapped: a load reads it.
 *
 * Only the first pass of a full save packs.  Every later write of a
 * cluster -- a live save's rewrite of a dirtied cluster, an incremental
 * save's -- goes in place and unpacks it (its slots are then dead, and
 * stay part of the snapshot's area: the pack area only ever grows within
 * one save, and an incremental save keeps its base's).  This keeps every
 * rule of the RAM section as it was: a rewrite is an overwrite of the same
 * clusters, and an incremental save shares the base's pack area and map
 * clusters by reference like the rest.
 *
 * The map is written with the header, under the save's pause, and carries
 * a CRC-32 in the header; a load reads and checks all of it (a slot past
 * the area, a cluster named twice or past RAM) before anything changes.
 * In memory it is a table over all clusters and a page bitmap.
 */
#ifndef SNAPVM_SNAPSHOT_PACK_H
#define SNAPVM_SNAPSHOT_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct block_extent;
struct block_node;
struct vmstate_header;

struct ram_packs {
    uint64_t offset;    /* vmstate position of slot 0 */
    uint64_t slots;     /* slots the area has (its length in pages) */
    uint32_t unit;      /* pages per cluster */
    uint64_t pages;     /* pages of RAM */
    uint64_t nclusters; /* clusters of RAM (the last may be partial) */
    uint32_t *index;    /* per cluster: 0, not packed; else 1 + its first slot */
    uint64_t *present;  /* per page: it has a slot (packed clusters only) */
    uint64_t packed;    /* clusters packed */
};

/* An empty map for ram_size bytes of RAM in clusters of `unit` pages. */
struct ram_packs *ram_packs_new(uint64_t ram_size, uint32_t unit);
void ram_packs_free(struct ram_packs *p);

/* Is cluster c packed?  Its first slot in *slot. */
static inline bool ram_packs_cluster(const struct ram_packs *p, uint64_t c, uint64_t *slot)
{
    if (!p || !p->packed || !p->index[c]) {
        return false;
    }
    *slot = p->index[c] - 1u;
    return true;
}

/* Cluster c is stored in place from now on (its slots are dead). */
void ram_packs_unpack(struct ram_packs *p, uint64_t c);

/* The map section (*len bytes, malloc'd: an entry per packed cluster, pack.c). */
uint8_t *ram_packs_encode(const struct ram_packs *p, uint64_t *len);
/* The header fields of a vmstate with this pack area and map (version 3). */
void ram_packs_header(const struct ram_packs *p, struct vmstate_header *h, const uint8_t *map,
                      uint64_t len);

/*
 * The map of snapshot `tag` on `node`, read and checked (header version 3);
 * *out NULL where the vmstate has none.  `where` names the snapshot.
 */
/* The check alone, on h->map_size bytes of a map (no I/O: unit tests, fuzzing). */
int ram_packs_decode(const uint8_t *map, const struct vmstate_header *h, const char *where,
                     struct ram_packs **out, struct error **errp);
int ram_packs_read(struct block_node *node, const char *tag, const struct vmstate_header *h,
                   const char *where, struct ram_packs **out, struct error **errp);

/*
 * Guest RAM [off, off + len) (page-aligned) of snapshot `tag`, into dst:
 * the RAM section, with packed clusters from their slots (their pages
 * without a slot zeroed).
 */
int ram_read(struct block_node *node, const char *tag, uint64_t ram_offset,
             const struct ram_packs *p, uint64_t off, uint64_t len, uint8_t *dst,
             struct error **errp);

/* In a map of pages stored (ram.h), a packed cluster's pages: set where they have a slot. */
void ram_packs_stored(const struct ram_packs *p, uint64_t *map);

/*
 * Extents of the RAM section (block_snapshot_vmstate_map, from ram_offset)
 * with every packed cluster made one UNMAPPABLE extent (neighbours merged):
 * what lies in its place is not its data.  Rewrites *ext (malloc'd).
 */
void ram_packs_mark(const struct ram_packs *p, uint64_t ram_offset, struct block_extent **ext,
                    size_t *n);

#endif
