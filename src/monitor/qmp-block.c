/*
 * QMP commands over the block graph: query-named-block-nodes, with each
 * qcow2 node's internal snapshots.  Reading a snapshot table takes the
 * node's lock, which a snapshot job or guest I/O may hold for a while, so
 * the query runs on a short-lived thread and answers through a deferred
 * reply: the monitor thread never waits for block I/O.
 */
#include <stdlib.h>

#include "block/block.h"
#include "machine/machine.h"
#include "monitor/commands.h"
#include "monitor/monitor-int.h"

static json_t *snapshot_info(const struct block_snapshot_info *s)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "id", s->id, "name", s->name,
                     "vm-state-size", (json_int_t)s->vm_state_size, "date-sec",
                     (json_int_t)s->date_sec, "date-nsec", (json_int_t)s->date_nsec, "vm-clock-sec",
                     (json_int_t)(s->vm_clock_nsec / 1000000000ull), "vm-clock-nsec",
                     (json_int_t)(s->vm_clock_nsec % 1000000000ull));
}

static int add_snapshots(json_t *image, struct block_node *node, struct error **errp)
{
    struct block_snapshot_info *list = NULL;
    size_t count = 0;
    if (block_snapshot_list(node, &list, &count, errp) < 0) {
        error_prepend(errp, "node '%s'", block_node_name(node));
        return -1;
    }
    if (count) {
        json_t *snaps = json_array();
        for (size_t i = 0; i < count; i++) {
            json_array_append_new(snaps, snapshot_info(&list[i]));
        }
        json_object_set_new(image, "snapshots", snaps);
    }
    free(list);
    return 0;
}

static json_t *node_info(struct block_node *node, struct error **errp)
{
    const char *filename = block_node_filename(node);
    json_t *image =
            json_pack("{s:s, s:s, s:I}", "filename", filename ? filename : "", "format",
                      block_node_driver(node), "virtual-size", (json_int_t)block_node_length(node));
    if (block_node_can_snapshot(node) && add_snapshots(image, node, errp) < 0) {
        json_decref(image);
        return NULL;
    }
    return json_pack("{s:s, s:s, s:s, s:b, s:i, s:b, s:o}", "node-name", block_node_name(node),
                     "drv", block_node_driver(node), "file", filename ? filename : "", "ro",
                     block_node_read_only(node), "backing_file_depth", 0, "encrypted", 0, "image",
                     image);
}

static json_t *query_nodes(struct qmp_request *req, void *opaque, struct error **errp)
{
    (void)opaque;
    struct block_graph *graph = machine_block_graph(qmp_request_machine(req));
    json_t *list = json_array();
    for (struct block_node *n = graph ? block_graph_next(graph, NULL) : NULL; n;
         n = block_graph_next(graph, n)) {
        json_t *info = node_info(n, errp);
        if (!info) {
            json_decref(list);
            return NULL;
        }
        json_array_append_new(list, info);
    }
    return list;
}

static json_t *qmp_query_named_block_nodes(struct qmp_request *req, json_t *args,
                                           struct error **errp)
{
    (void)args; /* "flat": there are no backing chains to flatten */
    if (!qmp_request_machine(req)) {
        error_setg(errp, "This monitor has no machine");
        return NULL;
    }
    qmp_request_run_in_thread(req, query_nodes, NULL);
    return NULL;
}

const struct qmp_command qmp_block_commands[] = {
        {"query-named-block-nodes", qmp_query_named_block_nodes},
        {NULL, NULL},
};
