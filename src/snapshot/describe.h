/*
 * The description record of a snapshot, and the VM's "current" snapshot.
 *
 * Every vmstate (format version 2 on, vmstate.h) carries a description
 * section: a JSON object saying what the snapshot is --
 *
 *   {"uuid": "<32 hex digits>",          unique: tags can be reused
 *    "tag": "a",
 *    "ancestors": ["<uuid>", ...],       parent first, then its parent, ...
 *    "vmstate": "root",                  the node holding the vmstate
 *    "nodes": [NODE, ...],               the nodes that took part
 *    "excluded": [NODE, ...],            writable nodes left out
 *    "machine": {"ram-size": N, "vcpus": N,
 *                "devices": [{"id", "type", "drive"?}, ...]}}
 *   NODE = {"node-name", "driver", "filename", "virtual-size"}
 *
 * -- so that an image describes itself: a fresh process lists the tree and
 * loads a snapshot by its tag alone, with no command line of the process
 * that made it.
 *
 * Why a chain of ancestors rather than just the parent: the record lives in
 * the snapshot's vmstate, which is never rewritten once the snapshot
 * exists (its clusters may be shared by reference).  Deleting a snapshot
 * must reconnect its children to its parent; with the chain, the parent a
 * query reports is simply the nearest ancestor that still exists, so a
 * delete rewrites nothing and no crash can leave a child pointing nowhere.
 * The chain is capped (DESCRIBE_MAX_ANCESTORS): a lineage deeper than that
 * whose every recorded ancestor was deleted shows up as a root.
 *
 * "Current" -- the snapshot the VM was last saved to or loaded from -- is
 * VM state, not snapshot state, and it must survive a restart.  It is kept
 * in a qcow2 header extension of snapvm's own (block_header_ext_*) on every
 * node of the last save or load, as {generation, uuid, fallback}: the
 * marker with the highest generation among the VM's nodes wins, so nodes
 * that took no part in the latest operation cannot outvote it; the fallback
 * (the nearest existing ancestor when it was written) is current while the
 * named snapshot is gone, which covers a crash between a delete of the
 * current snapshot and the marker's move to its parent.  Why there and not
 * in the active vmstate area: the header extension is 48 bytes written in place
 * (one atomic sector write, checksummed), costs no cluster, and survives
 * both snapvm's live save -- which rewrites the active vmstate area from
 * its first byte while the guest runs, so a failed or cancelled save would
 * lose the marker -- and QEMU, which keeps unknown header extensions
 * byte for byte but treats the vmstate area as its own.  What it cannot
 * see is a revert made by another tool (qemu-img snapshot -a): "current"
 * is what snapvm last did.
 */
#ifndef SNAPVM_SNAPSHOT_DESCRIBE_H
#define SNAPVM_SNAPSHOT_DESCRIBE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot/select.h"
#include "snapshot/vmstate.h"
#include "util/error.h"

struct block_graph;
struct block_node;
struct machine;
struct snapshot_request;

#define DESCRIBE_UUID_LEN      32
#define DESCRIBE_MAX_ANCESTORS 256
/* The header-extension type of the "current" marker: "snVM". */
#define DESCRIBE_CURRENT_EXT 0x736e564du

struct description;

/* ---- save ---- */

/*
 * Build the record of the snapshot being saved from `t`, the machine and
 * the current marker (which gives its ancestors).  NULL with *errp set on
 * failure.
 */
struct description *describe_capture(struct machine *m, const struct snapshot_targets *t,
                                     const char *tag, struct error **errp);
/*
 * Write the description section at vmstate_desc_offset(h) on `node` and
 * fill h's desc_* fields; the header is encoded afterwards.
 */
int describe_write(struct description *d, struct block_node *node, struct vmstate_header *h,
                   struct error **errp);

/* ---- load ---- */

/*
 * Parse and check a description section's text (already CRC-checked): a
 * record read from an image is untrusted, so every member used is checked.
 * `where` names the snapshot in errors.
 */
int describe_parse(const char *text, size_t len, struct description **out, const char *where,
                   struct error **errp);
/*
 * Read the description of snapshot `tag` on `node`.  0 with *out NULL for
 * a vmstate without one (format version 1); -1 with *errp set if the
 * vmstate or its description cannot be read or is corrupt.
 */
int describe_read(struct block_node *node, const char *tag, struct description **out,
                  struct error **errp);

/*
 * The node set of a load.  Tag alone (seed API without `exclude`): the
 * recorded set and vmstate node; a snapshot without a record (or with no
 * vmstate anywhere) falls back to snapshot_select's rules.  An explicit
 * `exclude`/`devices` wins, but a node outside the recorded set or a
 * `vmstate` other than the recorded one is an error naming it.  *desc is
 * the record (NULL if none); free it with describe_free().
 */
int describe_select_load(struct machine *m, const struct snapshot_request *req,
                         struct snapshot_targets *out, struct description **desc,
                         struct error **errp);

/*
 * The node set of a save: snapshot_select's rules, except that HMP savevm
 * (which cannot pass `exclude`) reuses the node set and vmstate node of
 * the current snapshot when there is one.
 */
int describe_select_save(struct machine *m, const struct snapshot_request *req,
                         struct snapshot_targets *out, struct error **errp);

/* ---- current ---- */

/*
 * The VM is now at `d` (NULL: at no snapshot with a record): write the
 * marker to every node of `t`.  Runs after the operation's commit point, so
 * it never fails the operation: a node that cannot take the marker is
 * logged and skipped.
 */
void describe_set_current(struct machine *m, const struct snapshot_targets *t,
                          const struct description *d);
/*
 * A snapshot was deleted from the nodes of `t`: if the VM was at it, the
 * VM is now at its nearest existing ancestor (or at none), as libvirt
 * does.  `gone` is its record, read before the delete (NULL: none).
 */
void describe_deleted(struct machine *m, const struct snapshot_targets *t,
                      const struct description *gone);

/* The uuid the current marker names; false if there is none. */
bool describe_current(struct block_graph *g, char uuid[DESCRIBE_UUID_LEN + 1]);

/* ---- accessors ---- */

const char *describe_uuid(const struct description *d);
const char *describe_vmstate(const struct description *d);
/* The record's "nodes"/"excluded" as arrays of node names (new references). */
json_t *describe_node_names(const struct description *d);
json_t *describe_excluded_names(const struct description *d);
/* The record's ancestors, parent first (borrowed JSON array of uuid strings). */
const json_t *describe_ancestors(const struct description *d);
/* The record's "machine" object (borrowed). */
const json_t *describe_machine(const struct description *d);
void describe_free(struct description *d);

#endif
