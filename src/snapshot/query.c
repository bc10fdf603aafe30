/*
 * query-snapshots: the VM-level view of the snapshots on every node, and
 * whether each can be loaded into this VM (judged by the load's own checks).
 */
#include "snapshot/snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "snapshot/snapshot-int.h"

static const char *unloadable_reason(struct machine *m, const char *tag, json_t *entry, char *buf,
                                     size_t len)
{
    struct snapshot_request req = {.api = SNAPSHOT_API_SEED, .tag = tag};
    struct load_ctx ctx = {.m = m, .req = &req};
    struct error *err = NULL;
    if (snapshot_select(machine_block_graph(m), SNAPSHOT_API_SEED, &req.nodes, NULL, false,
                        &ctx.targets, &err) == 0 &&
        require_tag_everywhere(&ctx.targets, tag, &err) == 0 &&
        find_vmstate_node(&ctx, &err) == 0 && read_and_check_vmstate(&ctx, &err) == 0) {
        json_object_set_new(entry, "vmstate", json_string(block_node_name(ctx.vmstate)));
    }
    free(ctx.records);
    free(ctx.devices);
    if (!err) {
        return NULL;
    }
    snprintf(buf, len, "%s", err->message);
    error_free(err);
    return buf;
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
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        char why[1024];
        const char *reason = unloadable_reason(m, json_string_value(json_object_get(e, "tag")), e,
                                               why, sizeof(why));
        json_object_set_new(e, "loadable", json_boolean(reason == NULL));
        if (reason) {
            json_object_set_new(e, "reason", json_string(reason));
        }
    }
    return list;
}
