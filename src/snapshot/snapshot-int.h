/*
 * What the whole-VM snapshot operations share (internal to src/snapshot):
 * tag checks, progress hooks, and the load checks that query-snapshots reuses to say
 * whether a snapshot can be loaded.  save.c, load.c, delete (snapshot.c)
 * and query.c each own one operation.
 */
#ifndef SNAPVM_SNAPSHOT_SNAPSHOT_INT_H
#define SNAPVM_SNAPSHOT_SNAPSHOT_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"
#include "machine/machine.h"
#include "snapshot/snapshot.h"
#include "snapshot/vmstate.h"

struct block_node;

#define TAG_MAX 255

int check_tag(const char *tag, struct error **errp);
/* Delete exactly the snapshot with this id (releasing RAM mapped from it). */
int delete_by_id(struct machine *m, struct block_node *node, const char *id, struct error **errp);

/*
 * One snapshot operation over several nodes with qcow2's transactions
 * (block.h): prepare every node (txn[i] for node i, NULL where nothing is
 * done), then txn_set_commit() -- each node's commit point; a failure
 * aborts every node, committed ones included -- then txn_set_finish().
 * txn_set_abort() undoes everything prepared or committed.
 */
struct txn_set {
    const struct snapshot_targets *t;
    struct block_txn *txn[SNAPSHOT_MAX_NODES];
};
void txn_set_init(struct txn_set *s, const struct snapshot_targets *t);
int txn_set_commit(struct txn_set *s, const char *what, struct error **errp);
int txn_set_abort(struct txn_set *s, struct error **errp);
void txn_set_finish(struct txn_set *s);

/*
 * Delete `tag` wherever it exists among t's nodes, all-or-nothing (found[i]:
 * it was on node i).  Used by delete and by a replacing save.
 */
int delete_everywhere(struct machine *m, const struct snapshot_targets *t, const char *tag,
                      bool *found, struct error **errp);
/*
 * Create snapshot `tag` on every node of t, all-or-nothing: the vmstate
 * node's snapshot records `vm_state_size` bytes of the vmstate written so
 * far, the others are disk-only.  `replace`: a snapshot of that tag on a
 * node is replaced by the new one at the same commit.  On failure no node
 * has the new one, and every replaced one is still there (the vmstate
 * written is still the active one: the caller discards it).
 */
int create_everywhere(struct machine *m, const struct snapshot_targets *t, const char *tag,
                      uint64_t vm_state_size, uint64_t vm_clock_ns, bool replace,
                      struct error **errp);
json_t *node_names(const struct snapshot_targets *t);
void progress_total(const struct snapshot_progress *p, uint64_t total);
void progress_advance(const struct snapshot_progress *p, uint64_t bytes);

/* ---- load checks, shared with query-snapshots ---- */

struct load_ctx {
    struct machine *m;
    const struct snapshot_request *req;
    struct snapshot_targets targets;
    struct block_node *vmstate;
    struct block_snapshot_info vm_info;
    struct vmstate_header header;
    uint8_t *devices;
    struct vmstate_record *records;
    size_t record_count;
    struct ram_packs *packs; /* the pack map (pack.h), NULL: none */
    char where[512];
};

int require_tag_everywhere(const struct snapshot_targets *t, const char *tag, struct error **errp);
/* Which node holds the vmstate: `vmstate` if given, else the node whose snapshot has one. */
int find_vmstate_node(struct load_ctx *ctx, struct error **errp);
/* Check that the tag is one instant on every node, then read and check the header,
 * every record and the pack map; nothing is touched.  The caller frees devices,
 * records and packs. */
int read_and_check_vmstate(struct load_ctx *ctx, struct error **errp);

#endif
