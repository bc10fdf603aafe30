/*
 * Whole-VM snapshot operations (see snapshot.h): what save (save.c), load
 * (load.c) and query (query.c) share -- tag checks and
 * progress hooks -- and delete, the simplest of the operations.
 */
#include "snapshot/snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "snapshot/describe.h"
#include "snapshot/restore.h"
#include "snapshot/snapshot-int.h"

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
 * Delete exactly the snapshot with this id.  The block layer looks names up
 * before ids, so refuse if the id string resolves to another snapshot (one
 * whose tag happens to equal this id).
 */
int delete_by_id(struct machine *m, struct block_node *node, const char *id, struct error **errp)
{
    struct block_snapshot_info info;
    if (block_snapshot_find(node, id, &info) < 0 || strcmp(info.id, id) != 0) {
        error_setg(errp,
                   "snapshot id '%s' on node '%s' is ambiguous (another snapshot is "
                   "tagged '%s')",
                   id, block_node_name(node), id);
        return -1;
    }
    if (restore_release(m, node, id, errp) < 0) {
        return -1;
    }
    return block_snapshot_delete(node, id, errp);
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
    for (size_t i = 0; i < t.count; i++) {
        struct block_snapshot_info info;
        const char *name = block_node_name(t.nodes[i]);
        if (block_snapshot_find(t.nodes[i], req->tag, &info) < 0) {
            json_array_append_new(missing, json_string(name));
            continue;
        }
        if (delete_by_id(m, t.nodes[i], info.id, errp) < 0) {
            error_prepend(errp, "deleting snapshot '%s' from node '%s'", req->tag, name);
            goto fail;
        }
        json_array_append_new(deleted, json_string(name));
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
