/*
 * Internals of the block layer shared by block.c and the drivers (file.c,
 * raw.c, qcow2*.c): the node structure and the driver operation table.
 * Nothing outside src/block includes this header; everyone else uses
 * block.h.
 *
 * Locking: block.c takes node->lock around every driver call made through
 * the public API, so driver callbacks run with their own node locked and
 * may call the public API on their children (lock order: parent, then
 * child; the graph is a tree, so there is no cycle).
 */
#ifndef SNAPVM_BLOCK_BLOCK_INT_H
#define SNAPVM_BLOCK_BLOCK_INT_H

#include <pthread.h>

#include "block/block.h"

struct block_driver {
    const char *name;
    bool is_protocol;              /* "file": no child, owns a host file */
    const char *const *extra_opts; /* options accepted besides the common ones */
    /* opts is the node's own object; node->file is already attached for formats. */
    int (*open)(struct block_node *node, json_t *opts, struct error **errp);
    void (*close)(struct block_node *node);
    uint64_t (*length)(struct block_node *node);
    int (*pread)(struct block_node *node, uint64_t off, void *buf, size_t len, struct error **errp);
    int (*pwrite)(struct block_node *node, uint64_t off, const void *buf, size_t len,
                  struct error **errp);
    int (*flush)(struct block_node *node, struct error **errp);
    int (*host_fd)(struct block_node *node);
    uint32_t (*cluster_size)(const struct block_node *node);
    struct block_node *(*backing)(const struct block_node *node); /* NULL: never has one */

    /* Internal snapshots; NULL for drivers without them. */
    int (*snapshot_list)(struct block_node *node, struct block_snapshot_info **list, size_t *count,
                         struct error **errp);
    int (*snapshot_create)(struct block_node *node, struct block_snapshot_info *info,
                           struct error **errp);
    int (*snapshot_goto)(struct block_node *node, const char *name_or_id, struct error **errp);
    int (*snapshot_delete)(struct block_node *node, const char *name_or_id, struct error **errp);
    /* Transactions (see block.h); txn is the driver's own handle. */
    int (*snapshot_create_prepare)(struct block_node *node, struct block_snapshot_info *info,
                                   void **txn, struct error **errp);
    int (*snapshot_replace_prepare)(struct block_node *node, const char *old_id,
                                    struct block_snapshot_info *info, void **txn,
                                    struct error **errp);
    int (*snapshot_goto_prepare)(struct block_node *node, const char *name_or_id, void **txn,
                                 struct error **errp);
    int (*snapshot_delete_prepare)(struct block_node *node, const char *name_or_id, void **txn,
                                   struct error **errp);
    int (*txn_commit)(struct block_node *node, void *txn, struct error **errp);
    int (*txn_abort)(struct block_node *node, void *txn, struct error **errp);
    void (*txn_finish)(struct block_node *node, void *txn);
    int (*vmstate_write)(struct block_node *node, uint64_t pos, const void *buf, size_t len,
                         struct error **errp);
    int (*vmstate_read)(struct block_node *node, uint64_t pos, void *buf, size_t len,
                        struct error **errp);
    int (*vmstate_discard)(struct block_node *node, struct error **errp);
    int (*vmstate_share)(struct block_node *node, const char *id, struct error **errp);
    bool (*vmstate_shares)(struct block_node *node, const char *id);
    int (*snapshot_space)(struct block_node *node, const char *name_or_id, uint64_t *stored,
                          uint64_t *exclusive, struct error **errp);
    int (*vmstate_write_ram)(struct block_node *node, const struct block_vmstate_run *runs,
                             size_t n, uint64_t *page_map, uint64_t map_pos, bool in_flight,
                             struct error **errp);
    int (*vmstate_ram_wait)(struct block_node *node, struct error **errp);
    int (*snapshot_vmstate_read)(struct block_node *node, const char *name_or_id, uint64_t pos,
                                 void *buf, size_t len, struct error **errp);
    int (*snapshot_vmstate_map)(struct block_node *node, const char *name_or_id, uint64_t pos,
                                uint64_t len, struct block_extent **extents, size_t *count,
                                struct error **errp);
    /* Application header extensions (block.h); NULL for drivers without them. */
    int (*header_ext_read)(struct block_node *node, uint32_t type, void *buf, size_t len,
                           size_t *out_len, struct error **errp);
    int (*header_ext_write)(struct block_node *node, uint32_t type, const void *buf, size_t len,
                            struct error **errp);
};

struct block_node {
    struct block_graph *graph;
    struct block_node *next; /* creation order */
    char *name;
    char *filename;
    const struct block_driver *drv;
    struct block_node *file; /* the protocol child of a format node */
    bool read_only;
    bool no_flush;    /* cache.no-flush=on: flush is a no-op (tests, scratch disks) */
    bool force_share; /* force-share=on (read-only only): deny nothing to others */
    int users;        /* format nodes using this node as their file child */
    pthread_mutex_t lock;
    void *opaque; /* driver state */
};

extern const struct block_driver block_driver_file;
extern const struct block_driver block_driver_raw;
extern const struct block_driver block_driver_qcow2;

/*
 * Open a private read-only node chain (format over file) for a backing
 * image.  It is not part of any graph's node list and is freed with
 * block_node_close_private().  fmt may be NULL to probe (qcow2 magic or raw).
 */
struct block_node *block_open_backing(struct block_node *parent, const char *filename,
                                      const char *fmt, int depth, struct error **errp);
void block_node_close_private(struct block_node *node);

/* Unlocked helpers for drivers acting on their child (they take the child's lock). */
int bdrv_child_pread(struct block_node *child, uint64_t off, void *buf, size_t len,
                     struct error **errp);
int bdrv_child_pwrite(struct block_node *child, uint64_t off, const void *buf, size_t len,
                      struct error **errp);
int bdrv_child_flush(struct block_node *child, struct error **errp);
uint64_t bdrv_child_length(struct block_node *child);

/* The file driver's current file size (may change as a format node writes). */
uint64_t file_node_size(struct block_node *node);
int file_node_truncate(struct block_node *node, uint64_t size, struct error **errp);

#endif
