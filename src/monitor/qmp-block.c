/*
 * QMP commands over the block graph: query-named-block-nodes (QEMU's
 * BlockDeviceInfo for every node of the graph, with each qcow2 node's
 * internal snapshots and its backing chain).  Reading a snapshot table takes the
 * node's lock, which a snapshot job or guest I/O may hold for a while, so
 * the query runs on a short-lived thread and answers through a deferred
 * reply: the monitor thread never waits for block I/O.
 */
#include <stdlib.h>
#include <sys/stat.h>

#include "block/block.h"
#include "machine/machine.h"
#include "monitor/monitor-int.h"
#include "monitor/qapi-commands.h"

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

/*
 * ImageInfo: the image of a node and, unless `flat`, the image of its
 * backing file and so on down the chain (QEMU's "backing-image").
 */
static json_t *image_info(struct block_node *node, bool flat, struct error **errp)
{
    const char *filename = block_node_filename(node);
    json_t *image =
            json_pack("{s:s, s:s, s:I}", "filename", filename ? filename : "", "format",
                      block_node_driver(node), "virtual-size", (json_int_t)block_node_length(node));
    struct stat st;
    int fd = block_node_host_fd(node);
    if (fd >= 0 && fstat(fd, &st) == 0) {
        json_object_set_new(image, "actual-size", json_integer((json_int_t)st.st_blocks * 512));
    }
    uint32_t cluster = block_node_cluster_size(node);
    if (cluster) {
        json_object_set_new(image, "cluster-size", json_integer(cluster));
    }
    struct block_node *backing = block_node_backing(node);
    if (backing) {
        const char *bf = block_node_filename(backing);
        json_object_set_new(image, "backing-filename", json_string(bf ? bf : ""));
        json_object_set_new(image, "full-backing-filename", json_string(bf ? bf : ""));
        json_object_set_new(image, "backing-filename-format",
                            json_string(block_node_driver(backing)));
    }
    if (block_node_can_snapshot(node) && add_snapshots(image, node, errp) < 0) {
        json_decref(image);
        return NULL;
    }
    if (backing && !flat) {
        json_t *b = image_info(backing, flat, errp);
        if (!b) {
            json_decref(image);
            return NULL;
        }
        json_object_set_new(image, "backing-image", b);
    }
    return image;
}

/*
 * BlockDeviceInfo, every member QEMU 7.2 requires, with snapvm's real
 * values: no throttling (bps/iops 0), no write threshold (0), zero
 * detection off (the option is accepted and ignored), and the cache mode
 * of QEMU's default, writeback through the host page cache (snapvm never
 * opens O_DIRECT), with no-flush as the node was opened.
 */
static json_t *node_info(struct block_node *node, bool flat, struct error **errp)
{
    const char *filename = block_node_filename(node);
    json_t *image = image_info(node, flat, errp);
    if (!image) {
        return NULL;
    }
    /* QEMU 7.2 counts the depth as it nests the chain's images: flat, 0. */
    int depth = 0;
    for (struct block_node *b = flat ? NULL : block_node_backing(node); b;
         b = block_node_backing(b)) {
        depth++;
    }
    json_t *info = json_pack(
            "{s:s, s:s, s:s, s:b, s:i, s:b, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:o, "
            "s:{s:b, s:b, s:b}, s:i}",
            "node-name", block_node_name(node), "drv", block_node_driver(node), "file",
            filename ? filename : "", "ro", block_node_read_only(node), "backing_file_depth", depth,
            "encrypted", 0, "detect_zeroes", "off", "bps", 0, "bps_rd", 0, "bps_wr", 0, "iops", 0,
            "iops_rd", 0, "iops_wr", 0, "image", image, "cache", "writeback", 1, "direct", 0,
            "no-flush", block_node_no_flush(node), "write_threshold", 0);
    struct block_node *backing = block_node_backing(node);
    if (backing && block_node_filename(backing)) {
        json_object_set_new(info, "backing_file", json_string(block_node_filename(backing)));
    }
    return info;
}

static json_t *query_nodes(struct qmp_request *req, void *opaque, struct error **errp)
{
    bool flat = opaque != NULL;
    struct block_graph *graph = machine_block_graph(qmp_request_machine(req));
    json_t *list = json_array();
    for (struct block_node *n = graph ? block_graph_next(graph, NULL) : NULL; n;
         n = block_graph_next(graph, n)) {
        /* A format node, then the nodes of its backing chain (as QEMU lists
         * the nodes it opened for it): each image, then its file node. */
        for (struct block_node *b = n; b; b = block_node_backing(b)) {
            struct block_node *file = b == n ? NULL : block_node_file_child(b);
            json_t *info = node_info(b, flat, errp);
            json_t *finfo = file && info ? node_info(file, flat, errp) : NULL;
            if (!info || (file && !finfo)) {
                json_decref(info);
                json_decref(list);
                return NULL;
            }
            json_array_append_new(list, info);
            if (finfo) {
                json_array_append_new(list, finfo);
            }
        }
    }
    return list;
}

json_t *qmp_query_named_block_nodes(struct qmp_request *req,
                                    const struct qapi_args_query_named_block_nodes *args,
                                    struct error **errp)
{
    if (!qmp_request_machine(req)) {
        error_setg(errp, "This monitor has no machine");
        return NULL;
    }
    bool flat = args->has_flat && args->flat;
    qmp_request_run_in_thread(req, query_nodes, flat ? (void *)1 : NULL);
    return NULL;
}
