/*
 * Which block nodes a whole-VM snapshot covers, and which one stores the
 * vmstate.  The rules (also stated in the README):
 *
 *  - The seed API (savevm/loadvm/delvm) takes every writable top-level node
 *    (a node that is not the "file" child of another node) minus `exclude`.
 *    A node in that set that cannot hold snapshots (a raw varstore, say) is
 *    an error that names it and suggests `exclude`.
 *  - QEMU 6.0's job API (snapshot-save/-load/-delete) takes exactly
 *    `devices`; each must exist and hold snapshots.
 *  - An empty set, an unknown node, a duplicate, or a `vmstate` node outside
 *    the set is an error of its own.
 *  - Default vmstate node (seed API without `vmstate`): the largest node of
 *    the set, first on the command line among equals; nodes under
 *    VMSTATE_MIN_DEFAULT_NODE_SIZE (4 MiB: an OVMF varstore is 128-540 KiB)
 *    are never chosen by default.  If only such nodes exist, `vmstate` must
 *    name one explicitly.
 */
#ifndef SNAPVM_SNAPSHOT_SELECT_H
#define SNAPVM_SNAPSHOT_SELECT_H

#include <stdbool.h>
#include <stddef.h>

#include "util/error.h"

struct block_graph;
struct block_node;

#define VMSTATE_MIN_DEFAULT_NODE_SIZE (4ULL << 20)
#define SNAPSHOT_MAX_NODES            64

struct snapshot_targets {
    struct block_node *nodes[SNAPSHOT_MAX_NODES];
    size_t count;
    struct block_node *vmstate; /* NULL for delete */
    bool vmstate_defaulted;     /* chosen by the default rule */
};

/* A list of node names from a QMP argument (borrowed strings). */
struct name_list {
    const char *const *names;
    size_t count;
};

enum snapshot_api {
    SNAPSHOT_API_SEED, /* savevm/loadvm/delvm: `exclude` */
    SNAPSHOT_API_JOB,  /* snapshot-save/-load/-delete: `devices` */
};

/*
 * Resolve the node set.  `names` is `exclude` (seed API) or `devices` (job
 * API).  `vmstate` may be NULL; `want_vmstate` is false for delete.
 */
int snapshot_select(struct block_graph *graph, enum snapshot_api api, const struct name_list *names,
                    const char *vmstate, bool want_vmstate, struct snapshot_targets *out,
                    struct error **errp);

#endif
