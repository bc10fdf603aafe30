/*
 * Guest RAM into and out of the vmstate RAM section (page i at
 * ram_offset + i * 4096, see vmstate.h).
 *
 * Saving never stores all-zero pages: they are holes or unallocated
 * clusters (both read as zeros).  A saver remembers which pages are stored
 * non-zero (the `stored` map, kept by the block layer as it writes).
 */
#ifndef SNAPVM_SNAPSHOT_RAM_H
#define SNAPVM_SNAPSHOT_RAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct block_node;
struct block_vmstate_run;

#define RAM_MAX_RUNS 4096 /* runs per block-layer batch */

struct ram_saver {
    struct block_node *node;
    uint64_t ram_offset; /* vmstate position of guest page 0 */
    const uint8_t *ram;
    uint64_t ram_size;
    uint64_t *stored;       /* bitmap: page holds non-zero data in the image */
    uint64_t pages_stored;  /* pages currently non-zero in the image */
    uint64_t bytes_written; /* non-zero pages written, rewrites included */
    uint64_t cluster_pages; /* pages per cluster of the node (the unit rewritten) */
    /*
     * Optional (ram_saver_find_holes): pages known to be zero without being
     * read, asked of the kernel per batch.
     *   - -mem-path RAM: the holes of the RAM file (FIEMAP, else SEEK_DATA).  On tmpfs,
     *     reading a hole through the shared mapping would allocate it, so a
     *     save would grow a sparse guest's RAM file to its full size;
     *     elsewhere each costs a page of page cache.
     *   - private anonymous RAM: pages never touched (or dropped), which
     *     /proc/self/pagemap shows neither present nor swapped.  Reading
     *     each would cost a page fault: 2.6 s for an 8 GiB guest that used
     *     64 MiB.
     * A guest write into such a page after the look is in the dirty log
     * like any other, and rewritten.
     */
    enum { RAM_HOLES_NONE, RAM_HOLES_FILE, RAM_HOLES_PAGEMAP } holes;
    int holes_fd;              /* the RAM file, or the open pagemap (owned) */
    bool no_fiemap;            /* the RAM file's file system has no FIEMAP: seek */
    uint64_t pages_known_zero; /* pages passed over unread, over all batches */
    /*
     * Bitmap per page: zero, as the last batch that held the page found it
     * (asked of the kernel as above, else read).  The block layer takes it
     * as exact and reads no page again; a packed cluster's pages are all
     * set, so that its place in the RAM section stays a hole.
     */
    uint64_t *zero;
    /*
     * Packing (pack.h; NULL where clusters are a page or smaller): the map
     * of this save, or of its base for an incremental one.  Only
     * ram_save_pages packs; every other write of a cluster unpacks it.
     */
    struct ram_packs *packs;
    struct block_vmstate_run *runs; /* the batch being collected */
    size_t nruns;
    uint64_t batch_bytes;
    /*
     * Optional: called as pages are processed, with the bytes of guest RAM
     * dealt with since the last call (written or skipped as zero), so that
     * progress reaches the RAM size whatever the share of zero pages.
     */
    void (*progress)(void *opaque, uint64_t bytes);
    /* Optional: polled between writes; true aborts the save. */
    bool (*cancelled)(void *opaque);
    void *opaque;
};

int ram_saver_init(struct ram_saver *s, struct block_node *node, uint64_t ram_offset,
                   const uint8_t *ram, uint64_t ram_size, struct error **errp);
void ram_saver_destroy(struct ram_saver *s);
/*
 * Where to learn which pages are zero without reading them (see `holes`):
 * ram_file, the -mem-path file guest RAM is (-1: none); else, if
 * `anonymous` (RAM is private anonymous memory throughout), the pagemap.
 */
void ram_saver_find_holes(struct ram_saver *s, int ram_file, bool anonymous);

/*
 * /proc/self/pagemap (open as `pagemap`): the entries of the n pages from
 * address p, one uint64_t each; 0, or -1 with errno set.
 */
#define PAGEMAP_PRESENT (1ull << 63)
#define PAGEMAP_SWAPPED (1ull << 62)
#define PAGEMAP_FILE    (1ull << 61) /* file-backed or shared */
int pagemap_entries(int pagemap, const void *p, uint64_t n, uint64_t *entries);

/*
 * Store pages [first, first + count), widened to whole clusters: every
 * cluster touched is rebuilt from guest RAM (zero pages become holes, an
 * all-zero cluster unallocated; see block_vmstate_write_ram).  The first
 * pass of a full save: a cluster of zero and non-zero pages is packed.
 */
int ram_save_pages(struct ram_saver *s, uint64_t first, uint64_t count, struct error **errp);
/* Store every cluster that holds a page marked in `dirty` (one bit per page). */
int ram_save_dirty(struct ram_saver *s, const uint64_t *dirty, struct error **errp);
/* How many pages ram_save_dirty() would store (the marked clusters' pages). */
uint64_t ram_dirty_cluster_pages(const struct ram_saver *s, const uint64_t *dirty);

/* Read the RAM of snapshot `tag` on `node` into guest RAM (packs: its pack map, or NULL). */
struct ram_packs;
int ram_load(struct block_node *node, const char *tag, uint64_t ram_offset,
             const struct ram_packs *packs, uint8_t *ram, uint64_t ram_size, struct error **errp);

/*
 * A saver's `stored` map for snapshot `tag` (pages held in stored clusters,
 * and pages with a slot), malloc'd, with the count in *pages_stored; NULL
 * if it cannot be read.
 */
uint64_t *ram_stored_map(struct block_node *node, const char *tag, uint64_t ram_offset,
                         const struct ram_packs *packs, uint64_t ram_size, uint64_t *pages_stored);

/*
 * Incremental saves (save.c): after a load of snapshot `id` (`tag`) on
 * `node`, the next save writes only the clusters changed since.  The load
 * calls, in order: before_load (before anything changes: any earlier base
 * goes, dirty tracking goes on), loaded (with the vCPUs still paused after
 * a successful load: tracking counts from that instant), after_load (after
 * resuming: the active vmstate area shares the snapshot's clusters; node
 * NULL: the load failed, tracking goes off; it takes over `packs`, the
 * snapshot's pack map).  forget: the machine is going
 * away.
 */
struct machine;
void snapshot_incr_before_load(struct machine *m);
int snapshot_incr_loaded(struct machine *m, struct error **errp);
void snapshot_incr_after_load(struct machine *m, struct block_node *node, const char *tag,
                              const char *id, uint64_t ram_offset, struct ram_packs *packs);
void snapshot_incr_forget(struct machine *m);
/*
 * A revert in place (restore.h): if the machine's base is snapshot `id` on
 * `node` (the VM last saved or loaded it, and the active vmstate area still
 * shares it), an empty page bitmap (free() it) for the caller to fill under
 * the load's pause with machine_dirty_log_sync(): the pages changed since
 * the snapshot's instant.  NULL: no base, or another snapshot.  The base
 * stays: after a revert the VM is at the snapshot again, and the count
 * restarts at that sync.  A revert that fails after the sync must
 * snapshot_incr_forget(): the marks it took are gone.
 */
uint64_t *snapshot_incr_changed(struct machine *m, struct block_node *node, const char *id);
/* Before snapshot `id` on `node` is deleted (with restore_release). */
void snapshot_incr_release(struct machine *m, struct block_node *node, const char *id);

/* True if the 4096 bytes at p are all zero. */
bool page_is_zero(const void *p);

#endif
