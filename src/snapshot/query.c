/*
 * query-snapshots: the VM-level view of the snapshots on every node, as
 * the images describe them (describe.h) -- the node set each snapshot
 * recorded, its vmstate node, its parent, whether the VM is at it -- and
 * whether each can be loaded into this VM, judged by exactly the checks
 * that `loadvm {tag}` makes (the recorded set, then the vmstate itself).
 * Enough for a client to draw the tree, with nothing but the images.
 */
#include "snapshot/snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "snapshot/describe.h"
#include "snapshot/pack.h"
#include "snapshot/snapshot-int.h"

/* What query-snapshots learns about one tag beyond the block layer's lists. */
struct entry_info {
    struct description *desc; /* NULL: no record (format 1, disk-only, foreign) */
};

/* Load checks, as `loadvm {tag}` makes them; the record comes back in info. */
static const char *unloadable_reason(struct machine *m, const char *tag, json_t *entry,
                                     struct entry_info *info, char *buf, size_t len)
{
    struct snapshot_request req = {.api = SNAPSHOT_API_SEED, .tag = tag};
    struct load_ctx ctx = {.m = m, .req = &req};
    struct error *err = NULL;
    if (describe_select_load(m, &req, &ctx.targets, &info->desc, &err) == 0 &&
        require_tag_everywhere(&ctx.targets, tag, &err) == 0 &&
        find_vmstate_node(&ctx, &err) == 0 && read_and_check_vmstate(&ctx, &err) == 0) {
        json_object_set_new(entry, "vmstate", json_string(block_node_name(ctx.vmstate)));
    }
    free(ctx.records);
    ram_packs_free(ctx.packs);
    free(ctx.devices);
    if (!err) {
        return NULL;
    }
    snprintf(buf, len, "%s", err->message);
    error_free(err);
    return buf;
}

/* A snapshot whose record cannot be used for loading is still described if it can be read. */
static void describe_anyway(struct machine *m, const char *tag, struct entry_info *info)
{
    struct block_graph *g = machine_block_graph(m);
    for (struct block_node *n = block_graph_next(g, NULL); n && !info->desc;
         n = block_graph_next(g, n)) {
        struct block_snapshot_info s;
        if (block_node_can_snapshot(n) && block_snapshot_find(n, tag, &s) == 0 &&
            s.vm_state_size > 0) {
            describe_read(n, tag, &info->desc, NULL);
        }
    }
}

static json_t *find_entry(json_t *list, const char *tag)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        if (!strcmp(json_string_value(json_object_get(e, "tag")), tag)) {
            return e;
        }
    }
    return NULL;
}

static void add_node_snapshot(json_t *list, struct block_node *n,
                              const struct block_snapshot_info *s)
{
    json_t *e = find_entry(list, s->name);
    if (!e) {
        e = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:[]}", "tag", s->name, "id", s->id,
                      "date-sec", (json_int_t)s->date_sec, "date-nsec", (json_int_t)s->date_nsec,
                      "vm-clock-nsec", (json_int_t)s->vm_clock_nsec, "vm-state-size", (json_int_t)0,
                      "nodes");
        json_array_append_new(list, e);
    }
    if (s->vm_state_size) {
        json_object_set_new(e, "vm-state-size", json_integer((json_int_t)s->vm_state_size));
        json_object_set_new(e, "id", json_string(s->id));
    }
    json_array_append_new(json_object_get(e, "nodes"), json_string(block_node_name(n)));
    /* Space (interface 3, from incr): the vmstate node's stored bytes, and
     * what deleting the snapshot frees on every node that holds it. */
    uint64_t stored = 0, exclusive = 0;
    if (block_snapshot_space(n, s->id, &stored, &exclusive, NULL) == 0) {
        json_int_t st = json_integer_value(json_object_get(e, "stored-bytes"));
        json_int_t ex = json_integer_value(json_object_get(e, "exclusive-bytes"));
        json_object_set_new(e, "stored-bytes", json_integer(st + (json_int_t)stored));
        json_object_set_new(e, "exclusive-bytes", json_integer(ex + (json_int_t)exclusive));
    }
}

/* The index of the entry whose record has this uuid, or -1. */
static long entry_with_uuid(const struct entry_info *infos, size_t count, const char *uuid)
{
    for (size_t i = 0; i < count; i++) {
        if (infos[i].desc && !strcmp(describe_uuid(infos[i].desc), uuid)) {
            return (long)i;
        }
    }
    return -1;
}

/*
 * What the records say: the recorded node set, and the parent -- the
 * nearest recorded ancestor that still exists, so that the children of a
 * deleted snapshot hang from its parent.
 */
static void add_record(json_t *list, struct entry_info *infos, size_t count, size_t i)
{
    json_t *e = json_array_get(list, i);
    const struct description *d = infos[i].desc;
    if (!d) {
        return; /* no record: nothing known about what was left out, nor a parent */
    }
    json_object_set_new(e, "nodes", describe_node_names(d));
    json_object_set_new(e, "excluded", describe_excluded_names(d));
    json_object_set_new(e, "machine", json_deep_copy(describe_machine(d)));
    if (!json_object_get(e, "vmstate")) {
        json_object_set_new(e, "vmstate", json_string(describe_vmstate(d)));
    }
    size_t k;
    json_t *a;
    json_array_foreach(describe_ancestors(d), k, a)
    {
        long p = entry_with_uuid(infos, count, json_string_value(a));
        if (p >= 0 && (size_t)p != i) {
            json_object_set(e, "parent", json_object_get(json_array_get(list, (size_t)p), "tag"));
            break;
        }
    }
}

json_t *vm_snapshot_query(struct machine *m, struct error **errp)
{
    struct block_graph *g = machine_block_graph(m);
    json_t *list = json_array();
    for (struct block_node *n = block_graph_next(g, NULL); n; n = block_graph_next(g, n)) {
        if (!block_node_can_snapshot(n)) {
            continue;
        }
        struct block_snapshot_info *snaps = NULL;
        size_t count = 0;
        if (block_snapshot_list(n, &snaps, &count, errp) < 0) {
            json_decref(list);
            return NULL;
        }
        for (size_t i = 0; i < count; i++) {
            add_node_snapshot(list, n, &snaps[i]);
        }
        free(snaps);
    }
    size_t count = json_array_size(list);
    struct entry_info *infos = calloc(count ? count : 1, sizeof(*infos));
    if (!infos) {
        abort();
    }
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_array_get(list, i);
        char why[1024];
        const char *reason = unloadable_reason(m, json_string_value(json_object_get(e, "tag")), e,
                                               &infos[i], why, sizeof(why));
        json_object_set_new(e, "loadable", json_boolean(reason == NULL));
        if (reason) {
            json_object_set_new(e, "reason", json_string(reason));
            describe_anyway(m, json_string_value(json_object_get(e, "tag")), &infos[i]);
        }
    }
    char current[DESCRIBE_UUID_LEN + 1];
    long at = describe_current(g, current) ? entry_with_uuid(infos, count, current) : -1;
    for (size_t i = 0; i < count; i++) {
        add_record(list, infos, count, i);
        json_object_set_new(json_array_get(list, i), "current", json_boolean((long)i == at));
    }
    for (size_t i = 0; i < count; i++) {
        describe_free(infos[i].desc);
    }
    free(infos);
    return list;
}
