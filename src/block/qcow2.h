/*
 * Internals of the qcow2 driver, shared by its files:
 *   qcow2.c           open, header parsing/validation, header updates, I/O entry points
 *   qcow2-cache.c     the L2-table / refcount-block cache (write-through)
 *   qcow2-cluster.c   L1/L2 mapping: reads, allocating writes with COW, L1 growth
 *   qcow2-refcount.c  refcounts: lookup, update, cluster allocation, table growth
 *   qcow2-snapshot.c  the snapshot table; snapshot create/goto/delete and vmstate
 *                     discard as transactions (prepare, commit, finish/abort)
 *   qcow2-vmstate.c   the vmstate area: writes, reads, a snapshot's vmstate
 *   qcow2-repair.c    refcount rebuild for images left dirty (lazy refcounts)
 *
 * Format facts come from QEMU's docs/interop/qcow2.rst.  All on-disk numbers
 * are big-endian; in-memory tables (L1, refcount table) are kept in host
 * order and converted on every read/write.
 *
 * Crash safety rule used everywhere: new metadata is written to clusters
 * that nothing references yet, then flushed (qcow2_barrier), then one small
 * atomic pointer update (an 8-byte table entry or a <= 12-byte header field
 * group inside sector 0) makes it live, then flushed, and only then are the
 * old clusters freed.  A crash therefore leaves the old or the new state,
 * with leaked clusters at most.
 */
#ifndef SNAPVM_BLOCK_QCOW2_H
#define SNAPVM_BLOCK_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block-int.h"

#define QCOW2_MAGIC 0x514649fbu

#define QCOW2_INCOMPAT_DIRTY        (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT      (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE    (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION  (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2        (1ull << 4)
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)

/* Header field offsets (bytes) that snapvm updates in place. */
#define QCOW2_HDR_L1        36 /* l1_size (4) + l1_table_offset (8) */
#define QCOW2_HDR_REFTABLE  48 /* refcount_table_offset (8) + clusters (4) */
#define QCOW2_HDR_SNAPSHOTS 60 /* nb_snapshots (4) + snapshots_offset (8) */
#define QCOW2_HDR_INCOMPAT  72
#define QCOW2_HDR_AUTOCLEAR 88

#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE  0x6803f857u
#define QCOW2_EXT_DATA_FILE      0x44415441u
#define QCOW2_EXT_BITMAPS        0x23852875u

/* L1/L2 entry bits. */
#define QCOW_OFLAG_COPIED     (1ull << 63)
#define QCOW_OFLAG_COMPRESSED (1ull << 62)
#define QCOW_OFLAG_ZERO       (1ull << 0)
#define L1E_OFFSET_MASK       0x00fffffffffffe00ull
#define L2E_OFFSET_MASK       0x00fffffffffffe00ull
#define REFT_OFFSET_MASK      0xfffffffffffffe00ull

/* Limits (QEMU's implementation limits, so that QEMU can open what we write). */
#define QCOW2_MAX_L1_BYTES       (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_SNAPSHOTS      65536
#define QCOW2_MAX_SNAPSHOT_EXTRA 1024
#define QCOW2_MAX_SNAPTABLE      (64u << 20)

enum qcow2_cluster_type {
    QCOW2_CLUSTER_UNALLOCATED,
    QCOW2_CLUSTER_ZERO_PLAIN,
    QCOW2_CLUSTER_ZERO_ALLOC,
    QCOW2_CLUSTER_NORMAL,
    QCOW2_CLUSTER_COMPRESSED,
};

struct qcow2_snapshot {
    uint64_t l1_offset;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint8_t *extra; /* the raw extra data, kept byte for byte */
    uint32_t extra_size;
};

struct qcow2_cache_entry {
    uint64_t offset; /* 0: empty */
    uint8_t *data;
    uint64_t lru;
    int pins;
    bool dirty;                  /* batched changes not yet written (pinned meanwhile) */
    uint64_t dirty_lo, dirty_hi; /* byte range to write */
};

struct qcow2_cache {
    const char *what; /* "L2 table" or "refcount block", for errors */
    struct qcow2_cache_entry *entries;
    size_t count;
    uint64_t clock;
};

struct qcow2_state {
    struct block_node *node;
    struct block_node *file;
    struct block_node *backing;
    uint32_t version;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t l2_bits; /* log2 of entries per L2 table */
    uint64_t l2_entries;
    uint64_t size; /* virtual disk size */
    uint64_t incompat, compat, autoclear;
    uint32_t header_length;
    uint8_t compression_type; /* 0 deflate, 1 zstd */

    uint64_t *l1; /* active L1, host order */
    uint32_t l1_size;
    uint64_t l1_offset;
    uint32_t l1_vm_state_index; /* first L1 entry past the guest disk */

    uint64_t *reftable; /* host order */
    uint64_t reftable_entries;
    uint64_t reftable_offset;
    uint32_t reftable_clusters;
    uint32_t refcount_order;
    uint64_t refcount_max;
    uint64_t rb_entries; /* refcounts per refcount block */

    uint32_t csize_shift; /* compressed descriptor: sector count position */
    uint64_t csize_mask;
    uint64_t cluster_offset_mask;

    struct qcow2_snapshot *snaps;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t snapshots_size; /* bytes of the on-disk table */

    struct qcow2_cache l2_cache;
    struct qcow2_cache rb_cache;
    uint64_t free_hint;       /* no free cluster below this index */
    bool unflushed_refcounts; /* refcount blocks written since the last barrier */
    bool rb_batch;            /* refcount updates stay in the cache until the batch ends */

    /* References to drop once the pointer updates that replaced them are on
     * disk (applied by the next qcow2_barrier): L2 entries (an L2 table is
     * queued as a plain cluster entry). */
    uint64_t *pending_drops;
    size_t n_pending_drops, cap_pending_drops;

    struct qcow2_txn *txn; /* the snapshot operation between prepare and finish/abort */
    bool broken;           /* an I/O error left the metadata state unknown: no writes */
    bool l1_write_pending;
    /* Metadata map for the overlap checks (qcow2-overlap.c). */
    struct qcow2_meta_item *meta;
    size_t n_meta, meta_cap;
    uint64_t meta_maxlen;
    bool meta_valid;
    uint64_t fsize_seen;
    /* file size last seen: host offsets beyond it are checked again */ /* COPIED flags of
                                                                           the active L1
                                                                           changed but not
                                                                           yet written */

    uint8_t *cbuf;               /* scratch for compressed input */
    uint8_t *dbuf;               /* one decompressed cluster */
    uint64_t dbuf_entry;         /* L2 entry dbuf holds, 0 if none */
    uint64_t dbuf_entry_pending; /* the entry being decompressed (for errors) */

    struct io_writer *ram_writer; /* the vmstate RAM writer, kept across batches (or NULL) */
    uint64_t ram_inflight_lo,
            ram_inflight_hi; /* host range of a batch left in flight (none: lo >= hi) */
};

/* ---- byte order ---- */
static inline uint64_t be64_get(const void *p)
{
    const uint8_t *b = p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | b[i];
    }
    return v;
}
static inline uint32_t be32_get(const void *p)
{
    const uint8_t *b = p;
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}
static inline uint16_t be16_get(const void *p)
{
    const uint8_t *b = p;
    return (uint16_t)((b[0] << 8) | b[1]);
}
static inline void be64_put(void *p, uint64_t v)
{
    uint8_t *b = p;
    for (int i = 7; i >= 0; i--) {
        b[i] = (uint8_t)v;
        v >>= 8;
    }
}
static inline void be32_put(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}
static inline void be16_put(void *p, uint16_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 8);
    b[1] = (uint8_t)v;
}

static inline uint64_t qcow2_align_up(const struct qcow2_state *s, uint64_t n)
{
    return (n + s->cluster_size - 1) & ~(s->cluster_size - 1);
}
static inline uint64_t qcow2_clusters(const struct qcow2_state *s, uint64_t bytes)
{
    return (bytes + s->cluster_size - 1) >> s->cluster_bits;
}
/* Virtual offset where the vmstate of a disk of `disk_size` bytes starts. */
static inline uint64_t qcow2_vmstate_offset(const struct qcow2_state *s, uint64_t disk_size)
{
    uint64_t l2_span = 1ull << (s->cluster_bits + s->l2_bits);
    return (disk_size + l2_span - 1) / l2_span * l2_span;
}

/* qcow2.c */
/*
 * Flush the file; then drop the references queued with qcow2_drop_later(),
 * whose replacement pointers that flush has made durable.
 */
int qcow2_barrier(struct qcow2_state *s, struct error **errp);
/* Queue the drop of what an L2 entry references (is_table: an L2 table offset). */
void qcow2_drop_later(struct qcow2_state *s, uint64_t entry, bool is_table);
int qcow2_write_header_field(struct qcow2_state *s, uint64_t off, const void *buf, size_t len,
                             struct error **errp);
int qcow2_file_pread(struct qcow2_state *s, uint64_t off, void *buf, size_t len,
                     struct error **errp);
int qcow2_file_pwrite(struct qcow2_state *s, uint64_t off, const void *buf, size_t len,
                      struct error **errp);
int qcow2_write_table(struct qcow2_state *s, uint64_t off, const uint64_t *table, size_t n,
                      uint64_t bytes, struct error **errp);
int qcow2_read_table(struct qcow2_state *s, uint64_t off, uint64_t *table, size_t n,
                     struct error **errp);

/* qcow2-cache.c */
void qcow2_cache_init(struct qcow2_cache *c, const char *what, size_t count);
void qcow2_cache_destroy(struct qcow2_cache *c);
/* Load (or find) the cluster at `offset`, pinned until qcow2_cache_put(). */
int qcow2_cache_get(struct qcow2_state *s, struct qcow2_cache *c, uint64_t offset, uint8_t **data,
                    struct error **errp);
/* Like get, but the cluster is new: filled with zeros instead of read. */
uint8_t *qcow2_cache_get_empty(struct qcow2_state *s, struct qcow2_cache *c, uint64_t offset);
void qcow2_cache_put(struct qcow2_cache *c, uint8_t *data);
/* Forget a cluster (it was freed and may be reused for something else). */
void qcow2_cache_forget(struct qcow2_cache *c, uint64_t offset);
/* Record that bytes [lo, hi) of a cached cluster changed; written by _write_dirty. */
void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint8_t *data, uint64_t lo, uint64_t hi);
/* Write every dirty range (one write per cluster) and unpin the entries. */
int qcow2_cache_write_dirty(struct qcow2_state *s, struct qcow2_cache *c, struct error **errp);

/* qcow2-refcount.c */
/* True if [off, off + clusters) overlaps any metadata (qcow2-overlap.c's map). */
bool qcow2_overlaps_metadata(struct qcow2_state *s, uint64_t off, uint64_t clusters);
int qcow2_refcount_init(struct qcow2_state *s, struct error **errp);
int qcow2_get_refcount(struct qcow2_state *s, uint64_t cluster_index, uint64_t *rc,
                       struct error **errp);
int qcow2_update_refcount(struct qcow2_state *s, uint64_t host_offset, int64_t delta,
                          struct error **errp);
/* Allocate n contiguous clusters (refcount 1); returns the host offset. */
int qcow2_alloc_clusters(struct qcow2_state *s, uint64_t n, uint64_t *offset, struct error **errp);
int qcow2_free_clusters(struct qcow2_state *s, uint64_t offset, uint64_t n, struct error **errp);
/* Add `delta` to the refcount of what an L2 entry references (data or compressed). */
int qcow2_update_entry_refcount(struct qcow2_state *s, uint64_t l2_entry, int64_t delta,
                                struct error **errp);
/*
 * Add `delta` to the refcounts of every L2 table and data cluster reachable
 * from l1[from..to).  On failure (refcount overflow) the part already done is
 * undone, so the image is unchanged.
 */
int qcow2_update_l1_refcounts(struct qcow2_state *s, const uint64_t *l1, uint32_t from, uint32_t to,
                              int64_t delta, struct error **errp);

/* qcow2-cluster.c */
enum qcow2_cluster_type qcow2_entry_type(const struct qcow2_state *s, uint64_t l2_entry);
int qcow2_get_entry(struct qcow2_state *s, const uint64_t *l1, uint32_t l1_size, uint64_t voff,
                    uint64_t *l2_entry, struct error **errp);
/* The entries of n clusters from voff on, all in voff's L2 table (n is cut at its end). */
int qcow2_get_entries(struct qcow2_state *s, const uint64_t *l1, uint32_t l1_size, uint64_t voff,
                      uint64_t *entries, size_t n, struct error **errp);
/* Read through any L1 table (the active one or a snapshot's). */
int qcow2_read_l1(struct qcow2_state *s, const uint64_t *l1, uint32_t l1_size, uint64_t voff,
                  uint8_t *buf, size_t len, bool use_backing, struct error **errp);
/* Write through the active L1 (copy-on-write where a cluster is shared). */
int qcow2_write_active(struct qcow2_state *s, uint64_t voff, const uint8_t *buf, size_t len,
                       struct error **errp);
int qcow2_grow_l1(struct qcow2_state *s, uint32_t min_size, struct error **errp);
/*
 * The active L2 table for L1 index l1i, pinned (qcow2_cache_put when done),
 * allocated or copied first if it is missing or shared with a snapshot.
 */
int qcow2_l2_for_write(struct qcow2_state *s, uint32_t l1i, uint8_t **l2, uint64_t *l2off,
                       struct error **errp);
/* Write the deferred vmstate L2 entries (after a flush); a no-op if none. */
int qcow2_flush_deferred(struct qcow2_state *s, struct error **errp);
int qcow2_write_l1_entry(struct qcow2_state *s, uint32_t idx, struct error **errp);
/* Make the COPIED flags of an L1 (in memory; sets *changed) and its L2 tables match refcounts. */
int qcow2_fix_copied_table(struct qcow2_state *s, uint64_t *l1, uint32_t size, bool *changed,
                           struct error **errp);
/* Same for the active L1, written back if it changed. */
int qcow2_fix_copied(struct qcow2_state *s, struct error **errp);

/* qcow2-overlap.c */
/* Where metadata lives changed (or a cluster was freed): rebuild the map before the next check. */
void qcow2_meta_changed(struct qcow2_state *s);
/* Refuse (mark corrupt, error naming what) a write that would land on metadata. */
int qcow2_check_overlap(struct qcow2_state *s, uint64_t off, uint64_t len, bool data,
                        struct error **errp);
/* The name of the metadata in [off, off + len), or NULL if none. */
const char *qcow2_metadata_at(struct qcow2_state *s, uint64_t off, uint64_t len);
/* Set the corrupt bit (incompatible feature bit 1) and refuse further writes. */
void qcow2_mark_corrupt(struct qcow2_state *s);
/* Error unless host offset `off` (+ len) lies within the file (the image is corrupt). */
int qcow2_check_host_range(struct qcow2_state *s, uint64_t off, uint64_t len, const char *what,
                           struct error **errp);
/* A data write (guest or vmstate clusters): checked against all metadata. */
int qcow2_data_pwrite(struct qcow2_state *s, uint64_t off, const void *buf, size_t len,
                      struct error **errp);

/* qcow2-repair.c: rebuild the refcounts of a dirty image and clear the dirty bit. */
int qcow2_repair_refcounts(struct qcow2_state *s, struct error **errp);
/* Lower refcounts that exceed the references (leaks) to the true count; sets *reclaimed. */
int qcow2_reclaim_leaks(struct qcow2_state *s, uint64_t *reclaimed, struct error **errp);

/* qcow2-snapshot.c */
int qcow2_read_snapshots(struct qcow2_state *s, struct error **errp);
void qcow2_free_snapshots(struct qcow2_snapshot *snaps, uint32_t n);
int qcow2_snapshot_list(struct block_node *node, struct block_snapshot_info **list, size_t *count,
                        struct error **errp);
int qcow2_snapshot_create(struct block_node *node, struct block_snapshot_info *info,
                          struct error **errp);
int qcow2_snapshot_goto(struct block_node *node, const char *name_or_id, struct error **errp);
int qcow2_snapshot_delete(struct block_node *node, const char *name_or_id, struct error **errp);
/* Transactions (block.h): prepare, then commit, then finish, or abort. */
int qcow2_snapshot_create_prepare(struct block_node *node, struct block_snapshot_info *info,
                                  void **txn, struct error **errp);
int qcow2_snapshot_replace_prepare(struct block_node *node, const char *old_id,
                                   struct block_snapshot_info *info, void **txn,
                                   struct error **errp);
int qcow2_snapshot_goto_prepare(struct block_node *node, const char *name_or_id, void **txn,
                                struct error **errp);
int qcow2_snapshot_delete_prepare(struct block_node *node, const char *name_or_id, void **txn,
                                  struct error **errp);
int qcow2_vmstate_discard_prepare(struct qcow2_state *s, void **txn, struct error **errp);
int qcow2_txn_commit(struct block_node *node, void *txn, struct error **errp);
int qcow2_txn_abort(struct block_node *node, void *txn, struct error **errp);
void qcow2_txn_finish(struct block_node *node, void *txn);
int qcow2_vmstate_discard(struct block_node *node, struct error **errp);
/* Error unless the node may be written (not broken by an unknown metadata state, no txn). */
int qcow2_check_writable(struct qcow2_state *s, struct error **errp);
/* Error if an I/O error left the metadata state unknown. */
int qcow2_check_usable(struct qcow2_state *s, struct error **errp);
/* Find a snapshot by name, then by id; NULL (error set) if none. */
struct qcow2_snapshot *qcow2_snapshot_lookup(struct qcow2_state *s, const char *name_or_id,
                                             struct error **errp);
/* A snapshot's L1 table, offsets only (flags masked), each checked to lie in the file. */
uint64_t *qcow2_read_snapshot_l1(struct qcow2_state *s, const struct qcow2_snapshot *sn,
                                 struct error **errp);
/* How many of an L1's first l1_size entries describe guest clusters (not the vmstate area). */
uint32_t qcow2_guest_l1_entries(const struct qcow2_state *s, uint32_t l1_size);

/* qcow2-vmstate.c */
int qcow2_vmstate_write(struct block_node *node, uint64_t pos, const void *buf, size_t len,
                        struct error **errp);
int qcow2_vmstate_read(struct block_node *node, uint64_t pos, void *buf, size_t len,
                       struct error **errp);
int qcow2_vmstate_share(struct block_node *node, const char *id, struct error **errp);
bool qcow2_vmstate_shares(struct block_node *node, const char *id);
int qcow2_snapshot_space(struct block_node *node, const char *name_or_id, uint64_t *stored,
                         uint64_t *exclusive, struct error **errp);
int qcow2_vmstate_write_ram(struct block_node *node, const struct block_vmstate_run *runs, size_t n,
                            uint64_t *page_map, uint64_t map_pos, bool in_flight,
                            struct error **errp);
int qcow2_vmstate_ram_wait(struct block_node *node, struct error **errp);
/* Before a flush: the RAM writes left in flight are done (a failure kept for the RAM path). */
void qcow2_vmstate_quiesce(struct qcow2_state *s);
/* At close: waits for the RAM writer's last requests and frees it. */
void qcow2_vmstate_close(struct qcow2_state *s);
int qcow2_snapshot_vmstate_read(struct block_node *node, const char *name_or_id, uint64_t pos,
                                void *buf, size_t len, struct error **errp);
/* qcow2-header-ext.c: application header extensions (see there). */
int qcow2_header_ext_read(struct block_node *node, uint32_t type, void *buf, size_t len,
                          size_t *out_len, struct error **errp);
int qcow2_header_ext_write(struct block_node *node, uint32_t type, const void *buf, size_t len,
                           struct error **errp);
int qcow2_snapshot_vmstate_map(struct block_node *node, const char *name_or_id, uint64_t pos,
                               uint64_t len, struct block_extent **extents, size_t *count,
                               struct error **errp);

#endif
