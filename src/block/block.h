/*
 * The block graph: every -blockdev / blockdev-add node of one machine.
 *
 * A node has a unique node-name, a driver ("file" is the protocol layer;
 * "raw" and "qcow2" are format layers on top of a "file" child) and a
 * read-only flag.  Devices (virtio-blk) and the whole-VM snapshot code use
 * only this interface; driver internals live in file.c, raw.c and qcow2*.c.
 *
 * Thread safety: each node has its own lock; calls on one node from several
 * threads (a vCPU doing virtio-blk I/O, a snapshot job) are serialised.
 *
 * Options (QEMU's names): common: driver, node-name, read-only,
 * force-share (with read-only: take no "deny write" lock, like qemu-img -U),
 * cache.no-flush (flush is a no-op: for tests and scratch disks),
 * auto-read-only/discard/detect-zeroes (accepted, ignored); file: filename,
 * locking (auto/on/off), aio (ignored); raw: file, offset, size; qcow2: file,
 * backing (only null: ignore the backing file), and QEMU's cache-size
 * options (accepted, ignored).  A "file" node takes QEMU's OFD image locks,
 * so QEMU and snapvm can never both write one image.
 */
#ifndef SNAPVM_BLOCK_BLOCK_H
#define SNAPVM_BLOCK_BLOCK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct block_graph;
struct block_node;

struct block_graph *block_graph_new(void);
/* Flush and close every node, releasing the image locks. */
void block_graph_free(struct block_graph *graph);

/*
 * Create a node (and its inline children, e.g. "file": {...}) from the
 * options of -blockdev / blockdev-add, as a JSON object:
 *   {"driver": "qcow2", "node-name": "disk0",
 *    "file": {"driver": "file", "filename": "disk.qcow2"}}
 * "file" may also be the node-name of an existing node.  Values may be typed
 * JSON or keyval strings ("read-only": "on").  Errors name the node/option.
 */
struct block_node *block_graph_add(struct block_graph *graph, json_t *opts, struct error **errp);
struct block_node *block_graph_find(struct block_graph *graph, const char *node_name);
/* Iterate over all nodes in creation order: pass NULL to get the first. */
struct block_node *block_graph_next(struct block_graph *graph, struct block_node *prev);

const char *block_node_name(const struct block_node *node);
const char *block_node_driver(const struct block_node *node); /* "file", "raw", "qcow2" */
const char *block_node_filename(const struct block_node *node);
struct block_node *block_node_file_child(const struct block_node *node); /* NULL for "file" */
bool block_node_read_only(const struct block_node *node);
/* Guest-visible size in bytes (qcow2: the virtual size). */
uint64_t block_node_length(const struct block_node *node);

int block_pread(struct block_node *node, uint64_t offset, void *buf, size_t len,
                struct error **errp);
int block_pwrite(struct block_node *node, uint64_t offset, const void *buf, size_t len,
                 struct error **errp);
int block_flush(struct block_node *node, struct error **errp);

/* ---- internal snapshots (qcow2 only) ---- */

/* True if the node's format stores internal snapshots (qcow2). */
bool block_node_can_snapshot(const struct block_node *node);

struct block_snapshot_info {
    char id[128];           /* unique id string, e.g. "1" */
    char name[256];         /* the tag */
    uint64_t vm_state_size; /* bytes of vmstate (0: disk-only snapshot) */
    uint64_t date_sec;      /* wall-clock time of creation */
    uint32_t date_nsec;
    uint64_t vm_clock_nsec; /* guest clock at creation */
    uint64_t disk_size;     /* virtual disk size when taken */
    bool truncated;         /* listing only: the image's id or name is longer than these
                               arrays (a foreign image); block_snapshot_find never matches
                               it, goto/delete by the whole name still do */
};

/* Returns a malloc'd array of *count entries (free with free()). */
int block_snapshot_list(struct block_node *node, struct block_snapshot_info **list, size_t *count,
                        struct error **errp);
/* Find by name (tag) first, then by id, comparing whole strings.  Returns 0 if found, -1 if
 * not (no error set). */
int block_snapshot_find(struct block_node *node, const char *name_or_id,
                        struct block_snapshot_info *out);

/*
 * vmstate of the snapshot being created.  The vmstate is written into the
 * active image's vmstate area *before* block_snapshot_create(); create then
 * records it (vm_state_size from info) and drops it from the active state
 * (the snapshot alone owns those clusters).  If the save fails before
 * create, block_vmstate_discard() frees whatever was written: no leaked
 * clusters.  A snapshot goto also drops an unsaved vmstate.
 *
 * `pos` is relative to the start of the vmstate area, which qcow2 puts
 * where QEMU does: at the first L1-entry boundary at or past the virtual
 * disk size (cluster_size * cluster_size / 8 granularity).  Rewriting a
 * range overwrites it in place (live save rewrites dirtied pages).
 */
int block_vmstate_write(struct block_node *node, uint64_t pos, const void *buf, size_t len,
                        struct error **errp);
int block_vmstate_discard(struct block_node *node, struct error **errp);

/*
 * Guest RAM into the active vmstate area, a whole cluster at a time: each
 * run's buffer replaces [pos, pos + len) of the area (len a multiple of
 * 4096).  All-zero 4 KiB pages take no disk space (an all-zero cluster is
 * left or made unallocated; inside a cluster with data, zero pages are
 * holes in the host file), and a cluster shared with a snapshot is never
 * read: it is replaced by a new one built from the buffer.  Many writes are
 * in flight at once, and data written where no cluster was (a fresh area)
 * costs no flush until block_snapshot_create().  Runs must be sorted by
 * pos and not overlap.  If page_map is not NULL, bit i says whether the
 * page at vmstate position map_pos + i * 4096 is now stored non-zero (set
 * or cleared for every page of the runs at or past map_pos).
 *
 * With `in_flight`, the call may return with the batch's data writes still
 * in flight, so that the disk writes one batch while the caller prepares
 * the next (a save's first pass).  Their buffers must then stay valid and
 * unchanged in meaning until block_vmstate_ram_wait(); the next call waits
 * for them too, before it submits its own batch.  A failure among them is
 * reported by that next call or by block_vmstate_ram_wait(): the save has
 * failed, and the batch's clusters are the area's (block_vmstate_discard
 * frees them).  Every flush of the node waits for them first, so no table
 * on disk names a cluster before its data is written.  A batch that
 * replaces a referenced cluster (a shared one) is always waited for.
 */
/*
 * Incremental saves.  block_vmstate_share() makes the (empty) active
 * vmstate area share snapshot `id`'s vmstate clusters, one more reference
 * each, so that a following save writes only the clusters it changes
 * (block_vmstate_write_ram replaces a shared cluster, never writes it) and
 * the new snapshot shares the rest.  Every snapshot stays complete by
 * itself: refcounts, not chains.  block_vmstate_shares() says whether the
 * area is still exactly that (nothing written or discarded since).
 */
int block_vmstate_share(struct block_node *node, const char *id, struct error **errp);
bool block_vmstate_shares(struct block_node *node, const char *id);
/*
 * Space of a snapshot: `stored`, the vmstate bytes it references on disk
 * (whole clusters); `exclusive`, the bytes only it holds (clusters of its
 * disk and vmstate with no other reference, its tables): what deleting it
 * frees.
 */
int block_snapshot_space(struct block_node *node, const char *name_or_id, uint64_t *stored,
                         uint64_t *exclusive, struct error **errp);

struct block_vmstate_run {
    uint64_t pos;
    const void *buf;
    uint64_t len;
    /* Optional: bit (known_zero_first + i) of known_zero set says page i of
     * buf is zero without reading it (a hole of a -mem-path file: reading it
     * through the mapping would allocate a page for it). */
    const uint64_t *known_zero;
    uint64_t known_zero_first;
    /* known_zero is exact: a page not marked holds data, and no page is read
     * to tell (the caller just did). */
    bool zero_map_exact;
    /* The run lies outside page_map's pages (packed RAM's slots, past RAM):
     * page_map is neither read nor changed for it. */
    bool unmapped;
};
int block_vmstate_write_ram(struct block_node *node, const struct block_vmstate_run *runs, size_t n,
                            uint64_t *page_map, uint64_t map_pos, bool in_flight,
                            struct error **errp);
/* Wait for the writes block_vmstate_write_ram left in flight; their first failure. */
int block_vmstate_ram_wait(struct block_node *node, struct error **errp);

/*
 * Create a snapshot of the current disk state plus the vmstate written so far.
 * info->name is the tag (must be new on this node; no control characters, and both
 * strings NUL-terminated within their arrays: longer ones are refused); info->id is assigned
 * (max numeric id + 1, as QEMU does) if empty.  info->vm_state_size is the
 * vmstate length to record; 0 makes a disk-only snapshot and frees any
 * vmstate written.  date_sec/date_nsec/vm_clock_nsec are stored as given
 * (qemu-img snapshot -l shows them).  Crash-safe: the image holds either
 * the old or the new snapshot table, never a mix (leaked clusters at most).
 */
int block_snapshot_create(struct block_node *node, struct block_snapshot_info *info,
                          struct error **errp);
/* Revert the disk content to the snapshot (the snapshot stays). */
int block_snapshot_goto(struct block_node *node, const char *name_or_id, struct error **errp);
int block_snapshot_delete(struct block_node *node, const char *name_or_id, struct error **errp);

/*
 * ---- snapshot transactions: all-or-nothing operations over several nodes ----
 *
 * block_snapshot_create/goto/delete above are each one transaction on one
 * node.  A whole-VM operation over several nodes (savevm or loadvm across
 * two disks) splits each node's operation into the same four steps, so that
 * it can prepare every node, then commit every node, and still undo all of
 * them if a later node fails:
 *
 *   prepare  does all the work that can fail: new tables go to clusters that
 *            nothing references, refcounts are raised, everything is flushed.
 *            Nothing that a reader or a re-open sees changes.  On failure it
 *            has undone itself (no leaks) and *txn is NULL.
 *   commit   the commit point: one sector-atomic header write (after a
 *            flush).  On success the node reads the new state.  On failure
 *            the node still reads the old state as far as snapvm can tell;
 *            the caller must then call abort (which also settles the case
 *            where the failed write may have reached the disk).
 *   abort    undo.  Before commit: drop what prepare made.  After a commit
 *            (as long as finish has not run): re-point the header to the old
 *            tables, which are still intact, then drop the new ones.  Frees
 *            txn.  Returns -1 only if the old state could not be written back
 *            (an I/O error): the error says so and the node then refuses
 *            further writes until it is reopened (nothing is freed that may
 *            still be referenced).
 *   finish   cleanup after a commit: frees what the old state held (old L1,
 *            old snapshot table, a deleted snapshot's clusters).  Never fails
 *            the operation: it logs, and at worst leaks clusters (reclaimed
 *            by the next writable open).  Frees txn.
 *
 * Between prepare and finish/abort the node refuses guest writes, vmstate
 * writes and other snapshot operations (error "... has a snapshot operation
 * in progress"): the caller keeps the VM paused meanwhile.  Reads work (the
 * old state before commit, the new one after).
 *
 * Multi-node use (e.g. loadvm over nodes A and B):
 *   prepare(A), prepare(B)           -- on failure abort the prepared ones
 *   commit(A), commit(B)             -- on failure abort all (A re-points)
 *   ... anything else that can fail (RAM, devices): on failure abort all ...
 *   finish(A), finish(B)
 * For savevm, create_prepare also takes over the vmstate written so far
 * (as block_snapshot_create does); after an abort the vmstate is still the
 * active one (block_vmstate_discard() it if the save is given up).
 */
struct block_txn;

int block_snapshot_create_prepare(struct block_node *node, struct block_snapshot_info *info,
                                  struct block_txn **txn, struct error **errp);
/*
 * Like create_prepare, but the snapshot with id old_id (exactly) is replaced in
 * the same commit write: its tag may be info->name, and no instant, crash or
 * error leaves neither the old nor the new one (HMP savevm of an existing
 * tag).  Finish releases the old one's clusters; abort keeps it.
 */
int block_snapshot_replace_prepare(struct block_node *node, const char *old_id,
                                   struct block_snapshot_info *info, struct block_txn **txn,
                                   struct error **errp);
/*
 * A goto to the snapshot the node's guest disk is still at (nothing written
 * since a goto to it or its creation) has nothing to do: it succeeds with
 * *txn NULL, and commit, abort and finish accept NULL.  The active vmstate
 * area is then left as it is (a revert in place keeps sharing it).
 */
int block_snapshot_goto_prepare(struct block_node *node, const char *name_or_id,
                                struct block_txn **txn, struct error **errp);
int block_snapshot_delete_prepare(struct block_node *node, const char *name_or_id,
                                  struct block_txn **txn, struct error **errp);
int block_snapshot_txn_commit(struct block_txn *txn, struct error **errp);
int block_snapshot_txn_abort(struct block_txn *txn, struct error **errp);
void block_snapshot_txn_finish(struct block_txn *txn);

/* Read a snapshot's vmstate directly (no goto needed). Reading past vm_state_size is an error. */
int block_snapshot_vmstate_read(struct block_node *node, const char *name_or_id, uint64_t pos,
                                void *buf, size_t len, struct error **errp);

/*
 * Read back the vmstate being written (the active image's vmstate area),
 * e.g. to verify a save before block_snapshot_create().  Unwritten parts
 * read as zeros.
 */
int block_vmstate_read(struct block_node *node, uint64_t pos, void *buf, size_t len,
                       struct error **errp);

/* ---- mapping a snapshot's vmstate straight into memory ("instant restore") ---- */

enum block_extent_kind {
    BLOCK_EXTENT_DATA,       /* bytes live at host_offset in block_node_host_fd() */
    BLOCK_EXTENT_ZERO,       /* reads as zeros; nothing stored */
    BLOCK_EXTENT_UNMAPPABLE, /* stored, but not as plain bytes (compressed): use
                                block_snapshot_vmstate_read() */
};

struct block_extent {
    uint64_t pos;         /* offset within the vmstate */
    uint64_t len;         /* bytes */
    uint64_t host_offset; /* BLOCK_EXTENT_DATA only: offset in the host file */
    enum block_extent_kind kind;
};

/*
 * Append e to a growing list of extents (*n used, *cap allocated), merged
 * into the last one where it continues it: the same kind, adjacent, and
 * for DATA contiguous in the host file.  Out of memory aborts.
 */
void block_extent_append(struct block_extent **v, size_t *n, size_t *cap, struct block_extent e);

/*
 * Describe where bytes [pos, pos + len) of a snapshot's vmstate live, as a
 * malloc'd array of *count extents (free with free()) that exactly cover the
 * range in order; adjacent clusters that are contiguous in the host file are
 * merged into one DATA extent.  The range must lie within vm_state_size
 * (the tail of the last cluster is included up to vm_state_size only).
 *
 * DATA extents of a snapshot stay valid and unchanged for as long as the
 * snapshot exists: snapvm writes a cluster in place only while its refcount
 * is 1, and the snapshot holds a reference to each of these (snapvm's active
 * image never references a vmstate at all after block_snapshot_create).  With
 * a cluster size of at least the page size, DATA host offsets that start at
 * a cluster boundary are page-aligned, so pages can be mmap()ed (MAP_PRIVATE)
 * from block_node_host_fd().
 */
int block_snapshot_vmstate_map(struct block_node *node, const char *name_or_id, uint64_t pos,
                               uint64_t len, struct block_extent **extents, size_t *count,
                               struct error **errp);

/*
 * The host file descriptor under a node (the "file" node at the bottom of
 * its chain), for mmap() of DATA extents; -1 if none.  Borrowed: valid until
 * the graph is freed; do not close it.
 */
int block_node_host_fd(struct block_node *node);

/*
 * Application header extensions (qcow2: qcow2-header-ext.c): a fixed-size
 * record of `len` bytes (a multiple of 8) under a header-extension type of
 * the caller's own, kept in the image's header cluster; QEMU preserves
 * extensions it does not know.  read: *out_len is 0 if the image has none
 * (or the driver has no header).  write: rewrites it in place (the length
 * must stay the same) or adds it (one commit point); fails when the header
 * cluster has no room.
 */
int block_header_ext_read(struct block_node *node, uint32_t type, void *buf, size_t len,
                          size_t *out_len, struct error **errp);
int block_header_ext_write(struct block_node *node, uint32_t type, const void *buf, size_t len,
                           struct error **errp);

/* Cluster size of a qcow2 node (0 for other drivers). */
uint32_t block_node_cluster_size(const struct block_node *node);
/*
 * The backing node of a format node with a backing file (its private,
 * read-only chain: not in the graph's node list, named "#blockN" from its
 * counter), or NULL.  For query-named-block-nodes.
 */
struct block_node *block_node_backing(const struct block_node *node);
/* cache.no-flush=on: flushes are no-ops. */
bool block_node_no_flush(const struct block_node *node);

#endif
