/*
 * Whole-VM snapshot operations (see snapshot.h): what save (save.c), load
 * (load.c) and query (query.c) share -- tag checks and
 * progress hooks -- and delete, the simplest of the operations.
 */
#include "snapshot/snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/block.h"
#include "snapshot/describe.h"
#include "snapshot/ram.h"
#include "snapshot/restore.h"
#include "snapshot/snapshot-int.h"
#include "util/log.h"

/* ------------------------------------------------------------------ */
/* helpers shared by save, load and delete                              */

/*
 * A tag is checked whole, before any copy or lookup, at every entry point
 * (QMP savevm/loadvm/delvm, the jobs, -loadvm; HMP checks its own first):
 * one that is cut or that carries a control character would name another
 * snapshot than the one the user meant.
 */
int check_tag(const char *tag, struct error **errp)
{
    if (!tag || !*tag) {
        error_setg(errp, "Parameter 'tag' must not be empty");
        return -1;
    }
    size_t len = strlen(tag);
    if (len > TAG_MAX) {
        error_setg(errp,
                   "Parameter 'tag' is %zu bytes long ('%.32s...'); a snapshot tag holds at "
                   "most %d",
                   len, tag, TAG_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tag[i];
        if (c < 0x20 || c == 0x7f) {
            error_setg(errp,
                       "Parameter 'tag' holds the control character 0x%02x at byte %zu: a "
                       "snapshot tag must be printable",
                       c, i);
            return -1;
        }
    }
    return 0;
}

/*
 * The block layer looks names up before ids: refuse an id that resolves to
 * another snapshot (one whose tag happens to equal this id).
 */
static int check_id(struct block_node *node, const char *id, struct error **errp)
{
    struct block_snapshot_info info;
    if (block_snapshot_find(node, id, &info) < 0 || strcmp(info.id, id) != 0) {
        error_setg(errp,
                   "snapshot id '%s' on node '%s' is ambiguous (another snapshot is "
                   "tagged '%s')",
                   id, block_node_name(node), id);
        return -1;
    }
    return 0;
}

int delete_by_id(struct machine *m, struct block_node *node, const char *id, struct error **errp)
{
    if (check_id(node, id, errp) < 0 || restore_release(m, node, id, errp) < 0) {
        return -1;
    }
    snapshot_incr_release(m, node, id);
    return block_snapshot_delete(node, id, errp);
}

/* ---- multi-node transactions (block.h): prepare all, commit all, finish all ---- */

void txn_set_init(struct txn_set *s, const struct snapshot_targets *t)
{
    memset(s, 0, sizeof(*s));
    s->t = t;
}

/*
 * Undo every prepared or committed node, all of them even when one fails
 * (an abort after a commit re-points the node at its old tables).  Returns
 * -1 if some node could not be put back; `errp` (already holding the
 * failure that made us undo) then says which.
 */
int txn_set_abort(struct txn_set *s, struct error **errp)
{
    int rc = 0;
    for (size_t i = 0; i < s->t->count; i++) {
        struct error *err = NULL;
        if (s->txn[i] && block_snapshot_txn_abort(s->txn[i], &err) < 0) {
            log_error("undoing the snapshot operation on node '%s': %s",
                      block_node_name(s->t->nodes[i]), err->message);
            if (errp && *errp) {
                error_prepend(errp, "node '%s' could not be put back (%s); and before that",
                              block_node_name(s->t->nodes[i]), err->message);
            }
            error_free(err);
            rc = -1;
        }
        s->txn[i] = NULL;
    }
    return rc;
}

/* Commit every prepared node; on a failure everything is undone. */
int txn_set_commit(struct txn_set *s, const char *what, struct error **errp)
{
    for (size_t i = 0; i < s->t->count; i++) {
        if (s->txn[i] && block_snapshot_txn_commit(s->txn[i], errp) < 0) {
            error_prepend(errp, "%s on node '%s'", what, block_node_name(s->t->nodes[i]));
            txn_set_abort(s, errp);
            return -1;
        }
    }
    return 0;
}

void txn_set_finish(struct txn_set *s)
{
    for (size_t i = 0; i < s->t->count; i++) {
        if (s->txn[i]) {
            block_snapshot_txn_finish(s->txn[i]);
            s->txn[i] = NULL;
        }
    }
}

/*
 * Delete snapshot `tag` wherever it exists among `t`'s nodes, at one commit
 * per node after every node is prepared: a failure anywhere (an I/O error
 * in a prepare or a commit) leaves it on every node.  RAM mapped from a
 * snapshot is made private first (restore_release): its clusters may be
 * reused once the delete finishes.  found[i] says where it was.
 */
int delete_everywhere(struct machine *m, const struct snapshot_targets *t, const char *tag,
                      bool *found, struct error **errp)
{
    struct txn_set set;
    txn_set_init(&set, t);
    for (size_t i = 0; i < t->count; i++) {
        struct block_snapshot_info info;
        found[i] = block_snapshot_find(t->nodes[i], tag, &info) == 0;
        if (!found[i]) {
            continue;
        }
        if (check_id(t->nodes[i], info.id, errp) < 0 ||
            restore_release(m, t->nodes[i], info.id, errp) < 0 ||
            (snapshot_incr_release(m, t->nodes[i], info.id), false) ||
            block_snapshot_delete_prepare(t->nodes[i], info.id, &set.txn[i], errp) < 0) {
            error_prepend(errp, "deleting snapshot '%s' from node '%s'", tag,
                          block_node_name(t->nodes[i]));
            txn_set_abort(&set, errp);
            return -1;
        }
    }
    /* The commit points: one header write per node. */
    char what[300];
    snprintf(what, sizeof(what), "deleting snapshot '%s'", tag);
    if (txn_set_commit(&set, what, errp) < 0) {
        return -1;
    }
    txn_set_finish(&set);
    return 0;
}

int create_everywhere(struct machine *m, const struct snapshot_targets *t, const char *tag,
                      uint64_t vm_state_size, uint64_t vm_clock_ns, bool replace,
                      struct error **errp)
{
    struct timespec now; /* one date for the snapshot on every node */
    clock_gettime(CLOCK_REALTIME, &now);
    struct txn_set set;
    txn_set_init(&set, t);
    for (size_t i = 0; i < t->count; i++) {
        struct block_snapshot_info info;
        memset(&info, 0, sizeof(info));
        snprintf(info.name, sizeof(info.name), "%s", tag);
        info.vm_state_size = t->nodes[i] == t->vmstate ? vm_state_size : 0;
        info.date_sec = (uint64_t)now.tv_sec;
        info.date_nsec = (uint32_t)now.tv_nsec;
        info.vm_clock_nsec = vm_clock_ns;
        /*
         * Replacing (HMP savevm of an existing tag): the old snapshot goes
         * in the same commit write that adds the new one, so no instant
         * leaves neither.  RAM mapped from it is made private first: its
         * clusters are released when the replace finishes.
         */
        struct block_snapshot_info old;
        bool replacing = replace && block_snapshot_find(t->nodes[i], tag, &old) == 0;
        if (replacing && (check_id(t->nodes[i], old.id, errp) < 0 ||
                          restore_release(m, t->nodes[i], old.id, errp) < 0)) {
            txn_set_abort(&set, errp);
            return -1;
        }
        if ((replacing
                     ? block_snapshot_replace_prepare(t->nodes[i], old.id, &info, &set.txn[i], errp)
                     : block_snapshot_create_prepare(t->nodes[i], &info, &set.txn[i], errp)) < 0) {
            error_prepend(errp, "creating snapshot '%s' on node '%s'", tag,
                          block_node_name(t->nodes[i]));
            txn_set_abort(&set, errp);
            return -1;
        }
    }
    char what[300];
    snprintf(what, sizeof(what), "creating snapshot '%s'", tag);
    if (txn_set_commit(&set, what, errp) < 0) {
        return -1;
    }
    txn_set_finish(&set);
    return 0;
}

json_t *node_names(const struct snapshot_targets *t)
{
    json_t *list = json_array();
    for (size_t i = 0; i < t->count; i++) {
        json_array_append_new(list, json_string(block_node_name(t->nodes[i])));
    }
    return list;
}

void progress_total(const struct snapshot_progress *p, uint64_t total)
{
    if (p && p->set_total) {
        p->set_total(p->opaque, total);
    }
}

void progress_advance(const struct snapshot_progress *p, uint64_t bytes)
{
    if (p && p->advance) {
        p->advance(p->opaque, bytes);
    }
}

void vm_snapshot_forget(struct machine *m)
{
    restore_forget(m);
    snapshot_incr_forget(m);
}

/* ------------------------------------------------------------------ */
/* delete                                                               */

int vm_snapshot_delete(struct machine *m, const struct snapshot_request *req, json_t **result,
                       struct error **errp)
{
    struct snapshot_targets t;
    if (check_tag(req->tag, errp) < 0 ||
        snapshot_select_delete(machine_block_graph(m), req->api, &req->nodes, &t, errp) < 0) {
        return -1;
    }
    /* Its record, read before it goes: if the VM is at it, its parent becomes current. */
    struct description *gone = NULL;
    struct block_node *holder = NULL;
    for (size_t i = 0; i < t.count && !holder; i++) {
        struct block_snapshot_info info;
        if (block_snapshot_find(t.nodes[i], req->tag, &info) == 0 && info.vm_state_size) {
            holder = t.nodes[i];
        }
    }
    if (holder) {
        describe_read(holder, req->tag, &gone, NULL);
    }
    json_t *deleted = json_array(), *missing = json_array();
    bool found[SNAPSHOT_MAX_NODES];
    if (delete_everywhere(m, &t, req->tag, found, errp) < 0) {
        goto fail;
    }
    for (size_t i = 0; i < t.count; i++) {
        json_array_append_new(found[i] ? deleted : missing,
                              json_string(block_node_name(t.nodes[i])));
    }
    if (json_array_size(deleted) == 0) {
        error_setg(errp, "Snapshot '%s' does not exist on any node", req->tag);
        goto fail;
    }
    describe_deleted(m, &t, gone);
    describe_free(gone);
    *result = json_pack("{s:s, s:o, s:o}", "tag", req->tag, "deleted", deleted, "missing", missing);
    return 0;
fail:
    describe_free(gone);
    json_decref(deleted);
    json_decref(missing);
    return -1;
}
