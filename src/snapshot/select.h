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
 *  - A delete (seed API) skips nodes that cannot hold snapshots.
 *  - Loading by tag alone uses the node set the snapshot recorded, and HMP
 *    savevm reuses the current snapshot's (describe.h).
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
 * Which interface a request came from: an error suggests only what that
 * interface can do (HMP and -loadvm cannot pass `exclude` or `vmstate`).
 */
enum snapshot_origin {
    SNAPSHOT_ORIGIN_QMP,     /* QMP commands and jobs (the default) */
    SNAPSHOT_ORIGIN_HMP,     /* human-monitor-command savevm/loadvm/delvm */
    SNAPSHOT_ORIGIN_CMDLINE, /* -loadvm TAG */
};

/*
 * Resolve the node set.  `names` is `exclude` (seed API) or `devices` (job
 * API).  `vmstate` may be NULL; `want_vmstate` is false for delete.
 */
int snapshot_select(struct block_graph *graph, enum snapshot_api api, const struct name_list *names,
                    const char *vmstate, bool want_vmstate, struct snapshot_targets *out,
                    struct error **errp);
/* The same, with errors worded for `origin` (snapshot_select() is SNAPSHOT_ORIGIN_QMP). */
int snapshot_select_as(struct block_graph *graph, enum snapshot_api api,
                       enum snapshot_origin origin, const struct name_list *names,
                       const char *vmstate, bool want_vmstate, struct snapshot_targets *out,
                       struct error **errp);

/*
 * The node set of a delete: as snapshot_select(), except that the seed API
 * skips nodes that cannot hold snapshots (they hold none to delete, so a
 * raw varstore needs no 'exclude' to delete by tag, as with QEMU's delvm).
 */
int snapshot_select_delete(struct block_graph *graph, enum snapshot_api api,
                           const struct name_list *names, struct snapshot_targets *out,
                           struct error **errp);

/* Writable top-level nodes that are not in `t`: what a snapshot of `t` leaves out. */
size_t snapshot_excluded(struct block_graph *graph, const struct snapshot_targets *t,
                         struct block_node **out, size_t max);

#endif
