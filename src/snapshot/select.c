/*
 * Node selection for whole-VM snapshots (rules in select.h).  Pure policy
 * over the block graph: nothing here touches an image.
 */
#include "snapshot/select.h"

#include <string.h>

#include "block/block.h"

static bool is_child_of_another(struct block_graph *graph, struct block_node *node)
{
    for (struct block_node *n = block_graph_next(graph, NULL); n; n = block_graph_next(graph, n)) {
        if (block_node_file_child(n) == node) {
            return true;
        }
    }
    return false;
}

static bool names_contain(const struct name_list *names, const char *name)
{
    for (size_t i = 0; names && i < names->count; i++) {
        if (!strcmp(names->names[i], name)) {
            return true;
        }
    }
    return false;
}

/* Every name must be a node, and no name may repeat. */
static int check_names(struct block_graph *graph, const struct name_list *names, const char *arg,
                       struct error **errp)
{
    for (size_t i = 0; names && i < names->count; i++) {
        if (!block_graph_find(graph, names->names[i])) {
            error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "'%s' names no block node: '%s'", arg,
                      names->names[i]);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(names->names[i], names->names[j])) {
                error_setg(errp, "'%s' lists node '%s' twice", arg, names->names[i]);
                return -1;
            }
        }
    }
    return 0;
}

static int add_target(struct snapshot_targets *out, struct block_node *node, struct error **errp)
{
    if (out->count == SNAPSHOT_MAX_NODES) {
        error_setg(errp, "too many nodes in one snapshot (at most %d)", SNAPSHOT_MAX_NODES);
        return -1;
    }
    out->nodes[out->count++] = node;
    return 0;
}

/* for_delete: a node that cannot hold snapshots holds none to delete, so it is skipped. */
static int select_seed(struct block_graph *graph, enum snapshot_origin origin, bool for_delete,
                       const struct name_list *exclude, struct snapshot_targets *out,
                       struct error **errp)
{
    if (check_names(graph, exclude, "exclude", errp) < 0) {
        return -1;
    }
    for (struct block_node *n = block_graph_next(graph, NULL); n; n = block_graph_next(graph, n)) {
        if (block_node_read_only(n) || is_child_of_another(graph, n) ||
            names_contain(exclude, block_node_name(n)) ||
            (for_delete && !block_node_can_snapshot(n))) {
            continue;
        }
        if (!block_node_can_snapshot(n) && origin != SNAPSHOT_ORIGIN_QMP) {
            /* QEMU's message: HMP and -loadvm have no 'exclude' to suggest. */
            error_setg(errp, "Device '%s' is writable but does not support snapshots",
                       block_node_name(n));
            return -1;
        }
        if (!block_node_can_snapshot(n)) {
            error_setg(errp,
                       "Node '%s' (%s, %s) is writable but its format cannot hold snapshots; "
                       "add it to 'exclude' to snapshot the VM without it",
                       block_node_name(n), block_node_driver(n), block_node_filename(n));
            return -1;
        }
        if (add_target(out, n, errp) < 0) {
            return -1;
        }
    }
    if (out->count == 0) {
        error_setg(errp, "No writable block node can hold the snapshot%s",
                   exclude && exclude->count ? " (all of them are in 'exclude')"
                                             : ": attach a qcow2 disk");
        return -1;
    }
    return 0;
}

static int select_devices(struct block_graph *graph, const struct name_list *devices,
                          struct snapshot_targets *out, struct error **errp)
{
    if (!devices || devices->count == 0) {
        error_setg(errp, "'devices' must name at least one block node");
        return -1;
    }
    if (check_names(graph, devices, "devices", errp) < 0) {
        return -1;
    }
    for (size_t i = 0; i < devices->count; i++) {
        struct block_node *n = block_graph_find(graph, devices->names[i]);
        if (!block_node_can_snapshot(n)) {
            error_setg(errp, "Node '%s' (%s, %s) cannot hold snapshots; remove it from 'devices'",
                       block_node_name(n), block_node_driver(n), block_node_filename(n));
            return -1;
        }
        if (block_node_read_only(n)) {
            error_setg(errp, "Node '%s' is read-only and cannot take a snapshot",
                       block_node_name(n));
            return -1;
        }
        if (add_target(out, n, errp) < 0) {
            return -1;
        }
    }
    return 0;
}

static bool in_targets(const struct snapshot_targets *t, const struct block_node *node)
{
    for (size_t i = 0; i < t->count; i++) {
        if (t->nodes[i] == node) {
            return true;
        }
    }
    return false;
}

static int pick_default_vmstate(struct snapshot_targets *out, enum snapshot_origin origin,
                                struct error **errp)
{
    struct block_node *best = NULL;
    for (size_t i = 0; i < out->count; i++) {
        struct block_node *n = out->nodes[i];
        if (block_node_length(n) < VMSTATE_MIN_DEFAULT_NODE_SIZE) {
            continue; /* varstore-sized: never a default home for RAM */
        }
        if (!best || block_node_length(n) > block_node_length(best)) {
            best = n;
        }
    }
    if (!best && origin != SNAPSHOT_ORIGIN_QMP) {
        error_setg(errp, "No node is large enough to hold the vmstate (every node in the "
                         "snapshot is under 4 MiB, like a firmware varstore)");
        return -1;
    }
    if (!best) {
        error_setg(errp,
                   "No node is large enough to be the default vmstate node (every node in the "
                   "snapshot is under 4 MiB, like a firmware varstore): name one with 'vmstate'");
        return -1;
    }
    out->vmstate = best;
    out->vmstate_defaulted = true;
    return 0;
}

static int resolve_vmstate(struct block_graph *graph, enum snapshot_api api,
                           enum snapshot_origin origin, const char *vmstate,
                           struct snapshot_targets *out, struct error **errp)
{
    if (!vmstate) {
        return pick_default_vmstate(out, origin, errp);
    }
    struct block_node *n = block_graph_find(graph, vmstate);
    if (!n) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "'vmstate' names no block node: '%s'",
                  vmstate);
        return -1;
    }
    if (!in_targets(out, n)) {
        if (!block_node_can_snapshot(n)) {
            error_setg(errp, "vmstate node '%s' (%s) cannot hold snapshots", vmstate,
                       block_node_driver(n));
        } else if (api == SNAPSHOT_API_JOB) {
            error_setg(errp, "vmstate node '%s' is not in 'devices'", vmstate);
        } else {
            error_setg(errp,
                       "vmstate node '%s' is not part of the snapshot (excluded or "
                       "read-only)",
                       vmstate);
        }
        return -1;
    }
    out->vmstate = n;
    return 0;
}

int snapshot_select_as(struct block_graph *graph, enum snapshot_api api,
                       enum snapshot_origin origin, const struct name_list *names,
                       const char *vmstate, bool want_vmstate, struct snapshot_targets *out,
                       struct error **errp)
{
    memset(out, 0, sizeof(*out));
    int rc = api == SNAPSHOT_API_SEED ? select_seed(graph, origin, false, names, out, errp)
                                      : select_devices(graph, names, out, errp);
    if (rc < 0) {
        return -1;
    }
    if (!want_vmstate) {
        return 0;
    }
    return resolve_vmstate(graph, api, origin, vmstate, out, errp);
}

int snapshot_select(struct block_graph *graph, enum snapshot_api api, const struct name_list *names,
                    const char *vmstate, bool want_vmstate, struct snapshot_targets *out,
                    struct error **errp)
{
    return snapshot_select_as(graph, api, SNAPSHOT_ORIGIN_QMP, names, vmstate, want_vmstate, out,
                              errp);
}

int snapshot_select_delete(struct block_graph *graph, enum snapshot_api api,
                           const struct name_list *names, struct snapshot_targets *out,
                           struct error **errp)
{
    memset(out, 0, sizeof(*out));
    return api == SNAPSHOT_API_SEED
                   ? select_seed(graph, SNAPSHOT_ORIGIN_QMP, true, names, out, errp)
                   : select_devices(graph, names, out, errp);
}

size_t snapshot_excluded(struct block_graph *graph, const struct snapshot_targets *t,
                         struct block_node **out, size_t max)
{
    size_t n = 0;
    for (struct block_node *b = block_graph_next(graph, NULL); b; b = block_graph_next(graph, b)) {
        if (!block_node_read_only(b) && !is_child_of_another(graph, b) && !in_targets(t, b) &&
            n < max) {
            out[n++] = b;
        }
    }
    return n;
}
