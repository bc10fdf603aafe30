/*
 * The description record of a snapshot and the VM's "current" marker
 * (format and reasons in describe.h): building the record at save, reading
 * and checking it at load and query, the node set of a load by tag alone
 * and of an HMP savevm, and keeping the marker.  The record's format is
 * owned here alone; save.c and load.c call in through describe.h.
 */
#include "snapshot/describe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "block/block.h"
#include "hw/device.h"
#include "machine/machine.h"
#include "snapshot/snapshot.h"
#include "util/buf.h"
#include "util/log.h"

/* Version of the record's JSON layout (the "format" member). */
#define DESCRIBE_FORMAT 1

struct description {
    json_t *root;
    char uuid[DESCRIBE_UUID_LEN + 1];
    const char *tag;
    const char *vmstate;
};

/* ---- accessors ---- */

const char *describe_uuid(const struct description *d)
{
    return d->uuid;
}

const char *describe_vmstate(const struct description *d)
{
    return d->vmstate;
}

static json_t *names_of(const struct description *d, const char *member)
{
    json_t *list = json_array();
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(d->root, member), i, n)
    {
        json_array_append(list, json_object_get(n, "node-name"));
    }
    return list;
}

json_t *describe_node_names(const struct description *d)
{
    return names_of(d, "nodes");
}

json_t *describe_excluded_names(const struct description *d)
{
    return names_of(d, "excluded");
}

const json_t *describe_ancestors(const struct description *d)
{
    return json_object_get(d->root, "ancestors");
}

const json_t *describe_machine(const struct description *d)
{
    return json_object_get(d->root, "machine");
}

void describe_free(struct description *d)
{
    if (d) {
        json_decref(d->root);
        free(d);
    }
}

static bool records_node(const struct description *d, const char *member, const char *name)
{
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(d->root, member), i, n)
    {
        if (!strcmp(json_string_value(json_object_get(n, "node-name")), name)) {
            return true;
        }
    }
    return false;
}

/* ---- parsing: a record read from an image is untrusted ---- */

static bool is_uuid(const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) != DESCRIBE_UUID_LEN) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return false;
        }
    }
    return true;
}

static bool nodes_valid(const json_t *list)
{
    if (!json_is_array(list) || json_array_size(list) > SNAPSHOT_MAX_NODES) {
        return false;
    }
    size_t i;
    json_t *n;
    json_array_foreach(list, i, n)
    {
        const char *name = json_string_value(json_object_get(n, "node-name"));
        if (!name || !*name) {
            return false;
        }
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(name,
                        json_string_value(json_object_get(json_array_get(list, j), "node-name")))) {
                return false; /* a node twice */
            }
        }
    }
    return true;
}

static const char *record_problem(const json_t *root)
{
    if (!json_is_object(root)) {
        return "not a JSON object";
    }
    if (!is_uuid(json_object_get(root, "uuid"))) {
        return "no valid 'uuid'";
    }
    if (!json_is_string(json_object_get(root, "tag")) ||
        !json_is_string(json_object_get(root, "vmstate"))) {
        return "no 'tag' or 'vmstate'";
    }
    if (!nodes_valid(json_object_get(root, "nodes")) ||
        json_array_size(json_object_get(root, "nodes")) == 0 ||
        !nodes_valid(json_object_get(root, "excluded"))) {
        return "bad 'nodes' or 'excluded'";
    }
    const json_t *mach = json_object_get(root, "machine");
    if (!json_is_integer(json_object_get(mach, "ram-size")) ||
        !json_is_integer(json_object_get(mach, "vcpus")) ||
        !json_is_array(json_object_get(mach, "devices"))) {
        return "bad 'machine'";
    }
    size_t di;
    json_t *dev;
    json_array_foreach(json_object_get(mach, "devices"), di, dev)
    {
        json_t *drive = json_object_get(dev, "drive");
        if (!json_is_string(json_object_get(dev, "id")) ||
            !json_is_string(json_object_get(dev, "type")) || (drive && !json_is_string(drive))) {
            return "bad 'machine' device";
        }
    }
    const json_t *anc = json_object_get(root, "ancestors");
    if (!json_is_array(anc) || json_array_size(anc) > DESCRIBE_MAX_ANCESTORS) {
        return "bad 'ancestors'";
    }
    size_t i;
    json_t *a;
    json_array_foreach(anc, i, a)
    {
        if (!is_uuid(a)) {
            return "bad 'ancestors'";
        }
    }
    return NULL;
}

static struct description *wrap(json_t *root)
{
    struct description *d = calloc(1, sizeof(*d));
    if (!d) {
        abort();
    }
    d->root = root;
    snprintf(d->uuid, sizeof(d->uuid), "%s", json_string_value(json_object_get(root, "uuid")));
    d->tag = json_string_value(json_object_get(root, "tag"));
    d->vmstate = json_string_value(json_object_get(root, "vmstate"));
    return d;
}

int describe_parse(const char *text, size_t len, struct description **out, const char *where,
                   struct error **errp)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *problem = root ? record_problem(root) : jerr.text;
    if (problem) {
        error_setg(errp, "%s: the description section is malformed (%s)", where, problem);
        json_decref(root);
        return -1;
    }
    *out = wrap(root);
    return 0;
}

int describe_read(struct block_node *node, const char *tag, struct description **out,
                  struct error **errp)
{
    *out = NULL;
    char where[512];
    snprintf(where, sizeof(where), "snapshot '%s' on node '%s'", tag, block_node_name(node));
    struct block_snapshot_info info;
    if (block_snapshot_find(node, tag, &info) < 0 || info.vm_state_size == 0) {
        error_setg(errp, "%s has no vmstate", where);
        return -1;
    }
    uint8_t hdr[VMSTATE_HEADER_SIZE] = {0};
    uint64_t hdr_len = info.vm_state_size < sizeof(hdr) ? info.vm_state_size : sizeof(hdr);
    struct vmstate_header h;
    if (block_snapshot_vmstate_read(node, tag, 0, hdr, hdr_len, errp) < 0 ||
        vmstate_header_decode(hdr, hdr_len, info.vm_state_size, &h, where, errp) < 0) {
        return -1;
    }
    if (h.desc_size == 0) {
        return 0; /* format version 1: no record */
    }
    char *text = malloc(h.desc_size + 1);
    if (!text) {
        error_setg(errp, "%s: out of memory for the description", where);
        return -1;
    }
    if (block_snapshot_vmstate_read(node, tag, h.desc_offset, text, h.desc_size, errp) < 0) {
        free(text);
        return -1;
    }
    if (vmstate_crc32(text, h.desc_size) != h.desc_crc) {
        free(text);
        error_setg(errp, "%s: description checksum mismatch (the vmstate is corrupt)", where);
        return -1;
    }
    int rc = describe_parse(text, h.desc_size, out, where, errp);
    free(text);
    return rc;
}

/* ---- building a record at save ---- */

static json_t *node_json(struct block_node *n)
{
    return json_pack("{s:s, s:s, s:s?, s:I}", "node-name", block_node_name(n), "driver",
                     block_node_driver(n), "filename", block_node_filename(n), "virtual-size",
                     (json_int_t)block_node_length(n));
}

static json_t *machine_json(struct machine *m)
{
    uint64_t ram_size;
    machine_ram(m, &ram_size);
    json_t *devices = json_array();
    for (struct device *d = machine_next_device(m, NULL); d; d = machine_next_device(m, d)) {
        json_t *dev = json_pack("{s:s, s:s}", "id", device_id(d), "type", device_type(d));
        struct block_node *drive = device_block_node(d);
        if (drive) {
            json_object_set_new(dev, "drive", json_string(block_node_name(drive)));
        }
        json_array_append_new(devices, dev);
    }
    return json_pack("{s:I, s:i, s:o}", "ram-size", (json_int_t)ram_size, "vcpus",
                     machine_vcpu_count(m), "devices", devices);
}

static void new_uuid(char out[DESCRIBE_UUID_LEN + 1])
{
    uint8_t raw[DESCRIBE_UUID_LEN / 2];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n <= 0) {
            abort(); /* getrandom() on Linux >= 3.17 does not fail for 16 bytes */
        }
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    }
}

/* The record with this uuid among the graph's snapshots (NULL: none; it was deleted). */
static struct description *find_by_uuid(struct block_graph *g, const char *uuid)
{
    for (struct block_node *n = block_graph_next(g, NULL); n; n = block_graph_next(g, n)) {
        if (!block_node_can_snapshot(n)) {
            continue;
        }
        struct block_snapshot_info *snaps = NULL;
        size_t count = 0;
        if (block_snapshot_list(n, &snaps, &count, NULL) < 0) {
            continue;
        }
        for (size_t i = 0; i < count; i++) {
            struct description *d = NULL;
            if (snaps[i].vm_state_size == 0 || describe_read(n, snaps[i].name, &d, NULL) < 0 ||
                !d) {
                continue;
            }
            if (!strcmp(d->uuid, uuid)) {
                free(snaps);
                return d;
            }
            describe_free(d);
        }
        free(snaps);
    }
    return NULL;
}

/* Ancestors of a snapshot saved now: the current one, then its own ancestors. */
static json_t *ancestors_now(struct block_graph *g)
{
    json_t *list = json_array();
    char uuid[DESCRIBE_UUID_LEN + 1];
    if (!describe_current(g, uuid)) {
        return list;
    }
    json_array_append_new(list, json_string(uuid));
    struct description *cur = find_by_uuid(g, uuid);
    if (cur) {
        size_t i;
        json_t *a;
        json_array_foreach(describe_ancestors(cur), i, a)
        {
            if (json_array_size(list) < DESCRIBE_MAX_ANCESTORS) {
                json_array_append(list, a);
            }
        }
        describe_free(cur);
    }
    return list;
}

struct description *describe_capture(struct machine *m, const struct snapshot_targets *t,
                                     const char *tag, struct error **errp)
{
    struct block_graph *g = machine_block_graph(m);
    if (!t->vmstate) {
        error_setg(errp, "snapshot '%s' has no vmstate node to describe", tag);
        return NULL;
    }
    char uuid[DESCRIBE_UUID_LEN + 1];
    new_uuid(uuid);
    json_t *nodes = json_array(), *excluded = json_array();
    for (size_t i = 0; i < t->count; i++) {
        json_array_append_new(nodes, node_json(t->nodes[i]));
    }
    struct block_node *left_out[SNAPSHOT_MAX_NODES];
    size_t n_left = snapshot_excluded(g, t, left_out, SNAPSHOT_MAX_NODES);
    for (size_t i = 0; i < n_left; i++) {
        json_array_append_new(excluded, node_json(left_out[i]));
    }
    json_t *root = json_pack("{s:i, s:s, s:s, s:o, s:s, s:o, s:o, s:o}", "format", DESCRIBE_FORMAT,
                             "uuid", uuid, "tag", tag, "ancestors", ancestors_now(g), "vmstate",
                             block_node_name(t->vmstate), "nodes", nodes, "excluded", excluded,
                             "machine", machine_json(m));
    if (!root) {
        error_setg(errp, "snapshot '%s': cannot build its description", tag);
        return NULL;
    }
    return wrap(root);
}

int describe_write(struct description *d, struct block_node *node, struct vmstate_header *h,
                   struct error **errp)
{
    char *text = json_dumps(d->root, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text) {
        error_setg(errp, "out of memory for the snapshot description");
        return -1;
    }
    size_t len = strlen(text);
    if (len > VMSTATE_MAX_DESC_SIZE) {
        free(text);
        error_setg(errp, "the snapshot description is too large (%zu bytes)", len);
        return -1;
    }
    h->desc_offset = vmstate_desc_offset(h);
    h->desc_size = len;
    h->desc_crc = vmstate_crc32(text, len);
    int rc = block_vmstate_write(node, h->desc_offset, text, len, errp);
    free(text);
    if (rc < 0) {
        error_prepend(errp, "writing the snapshot description to node '%s'", block_node_name(node));
    }
    return rc;
}

/* ---- the node set of a load ---- */

/* The first node (graph order) whose snapshot `tag` carries a vmstate. */
static int where_is_vmstate(struct block_graph *g, const char *tag, struct block_node **out)
{
    for (struct block_node *n = block_graph_next(g, NULL); n; n = block_graph_next(g, n)) {
        if (!block_node_can_snapshot(n)) {
            continue;
        }
        struct block_snapshot_info info;
        if (block_snapshot_find(n, tag, &info) == 0 && info.vm_state_size > 0) {
            *out = n;
            return 0;
        }
    }
    return -1;
}

/* The recorded set, node by node: each must be in this VM and able to take part. */
static int targets_from_record(struct block_graph *g, const struct description *d,
                               const struct snapshot_request *req, struct snapshot_targets *out,
                               struct error **errp)
{
    memset(out, 0, sizeof(*out));
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(d->root, "nodes"), i, n)
    {
        const char *name = json_string_value(json_object_get(n, "node-name"));
        struct block_node *b = block_graph_find(g, name);
        if (!b) {
            error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND,
                      "Snapshot '%s' was saved with node '%s', which this VM does not have%s",
                      d->tag, name,
                      req->origin == SNAPSHOT_ORIGIN_QMP ? " (name the nodes to use with 'exclude')"
                                                         : "");
            return -1;
        }
        if (!block_node_can_snapshot(b) || block_node_read_only(b)) {
            error_setg(errp,
                       "Snapshot '%s' was saved with node '%s', which is now %s and cannot "
                       "take part",
                       d->tag, name, block_node_read_only(b) ? "read-only" : block_node_driver(b));
            return -1;
        }
        out->nodes[out->count++] = b;
        if (!strcmp(name, d->vmstate)) {
            out->vmstate = b;
        }
    }
    if (!out->vmstate) {
        error_setg(errp, "Snapshot '%s': its vmstate node '%s' is not one of its recorded nodes",
                   d->tag, d->vmstate);
        return -1;
    }
    return 0;
}

/* An explicit set wins over the record, but may not contradict it. */
static int check_against_record(const struct description *d, const struct snapshot_request *req,
                                const struct snapshot_targets *t, struct error **errp)
{
    for (size_t i = 0; i < t->count; i++) {
        const char *name = block_node_name(t->nodes[i]);
        if (records_node(d, "nodes", name)) {
            continue;
        }
        if (records_node(d, "excluded", name)) {
            error_setg(errp,
                       "Node '%s' was excluded when snapshot '%s' was saved, so it has no "
                       "state to load; %s",
                       name, d->tag,
                       req->api == SNAPSHOT_API_SEED ? "add it to 'exclude'"
                                                     : "remove it from 'devices'");
        } else {
            error_setg(errp, "Node '%s' is not part of snapshot '%s'; %s", name, d->tag,
                       req->api == SNAPSHOT_API_SEED ? "add it to 'exclude'"
                                                     : "remove it from 'devices'");
        }
        return -1;
    }
    if (req->vmstate && strcmp(req->vmstate, d->vmstate) != 0) {
        error_setg(errp, "Snapshot '%s' keeps its vmstate on node '%s', not on '%s' ('vmstate')",
                   d->tag, d->vmstate, req->vmstate);
        return -1;
    }
    return 0;
}

/*
 * The record knows which node backed each device; a VM whose device of the
 * same id is backed by another node would get the disks swapped under the
 * guest's feet (the device state alone cannot tell: ids are just names).
 */
static int check_drives(struct machine *m, const struct description *d, struct error **errp)
{
    size_t i;
    json_t *dev;
    json_array_foreach(json_object_get(describe_machine(d), "devices"), i, dev)
    {
        const char *id = json_string_value(json_object_get(dev, "id"));
        const char *drive = json_string_value(json_object_get(dev, "drive"));
        struct device *now = drive ? machine_find_device(m, id) : NULL;
        struct block_node *node = now ? device_block_node(now) : NULL;
        if (node && strcmp(block_node_name(node), drive) != 0) {
            error_setg(errp,
                       "Snapshot '%s' was taken with device '%s' backed by node '%s'; in this VM "
                       "it is backed by '%s'",
                       d->tag, id, drive, block_node_name(node));
            return -1;
        }
    }
    return 0;
}

int describe_select_load(struct machine *m, const struct snapshot_request *req,
                         struct snapshot_targets *out, struct description **desc,
                         struct error **errp)
{
    struct block_graph *g = machine_block_graph(m);
    *desc = NULL;
    struct block_node *holder = NULL;
    /* The record is found wherever the vmstate is: a `vmstate` naming another node contradicts
     * it rather than hiding it. */
    if (where_is_vmstate(g, req->tag, &holder) == 0 &&
        describe_read(holder, req->tag, desc, errp) < 0) {
        return -1;
    }
    bool explicit_set = req->api == SNAPSHOT_API_JOB || req->nodes.names != NULL;
    if (!*desc || explicit_set) {
        /* No record (format version 1, or no vmstate): the rules of the command. */
        if (snapshot_select_as(g, req->api, req->origin, &req->nodes, req->vmstate,
                               req->vmstate != NULL, out, errp) < 0 ||
            (*desc && (check_against_record(*desc, req, out, errp) < 0 ||
                       check_drives(m, *desc, errp) < 0))) {
            describe_free(*desc);
            *desc = NULL;
            return -1;
        }
        return 0;
    }
    if (targets_from_record(g, *desc, req, out, errp) < 0 ||
        check_against_record(*desc, req, out, errp) < 0 || check_drives(m, *desc, errp) < 0) {
        describe_free(*desc);
        *desc = NULL;
        return -1;
    }
    return 0;
}

int describe_select_save(struct machine *m, const struct snapshot_request *req,
                         struct snapshot_targets *out, struct error **errp)
{
    struct block_graph *g = machine_block_graph(m);
    char uuid[DESCRIBE_UUID_LEN + 1];
    if (req->origin == SNAPSHOT_ORIGIN_HMP && !req->nodes.names && !req->vmstate &&
        describe_current(g, uuid)) {
        struct description *cur = find_by_uuid(g, uuid);
        if (cur) {
            int rc = targets_from_record(g, cur, req, out, errp);
            if (rc < 0) {
                error_prepend(errp, "savevm reuses the nodes of the current snapshot '%s'",
                              cur->tag);
            }
            describe_free(cur);
            return rc;
        }
    }
    return snapshot_select_as(g, req->api, req->origin, &req->nodes, req->vmstate, true, out, errp);
}

/* ---- the current marker ---- */

/*
 * On disk (little-endian, 48 bytes): magic, CRC-32 of bytes [8, 48),
 * generation, the current snapshot's uuid, and its fallback: the nearest
 * ancestor of it that existed when the marker was written.  The fallback
 * closes the window of a delete of the current snapshot: between the
 * delete's commit and the marker's rewrite, the marker names a snapshot
 * that is gone, and its fallback is what the rewrite will name.
 */
#define MARKER_SIZE  48
#define MARKER_MAGIC 0x32756373u /* "scu2" */
#define UUID_BYTES   (DESCRIBE_UUID_LEN / 2)

struct marker {
    uint64_t generation;
    char uuid[DESCRIBE_UUID_LEN + 1];     /* "": the VM is at no snapshot with a record */
    char fallback[DESCRIBE_UUID_LEN + 1]; /* "": none */
};

static void uuid_to_hex(const uint8_t *raw, char out[DESCRIBE_UUID_LEN + 1])
{
    bool any = false;
    for (size_t i = 0; i < UUID_BYTES; i++) {
        any |= raw[i] != 0;
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    }
    if (!any) {
        out[0] = 0;
    }
}

static void uuid_from_hex(const char *hex, uint8_t *raw)
{
    memset(raw, 0, UUID_BYTES);
    for (size_t i = 0; hex && *hex && i < UUID_BYTES; i++) {
        unsigned byte;
        sscanf(hex + 2 * i, "%2x", &byte);
        raw[i] = (uint8_t)byte;
    }
}

static bool read_marker(struct block_node *n, struct marker *out)
{
    uint8_t buf[MARKER_SIZE];
    size_t len = 0;
    if (!block_node_can_snapshot(n) ||
        block_header_ext_read(n, DESCRIBE_CURRENT_EXT, buf, sizeof(buf), &len, NULL) < 0 ||
        len != MARKER_SIZE || le_get(buf, 4) != MARKER_MAGIC ||
        le_get(buf + 4, 4) != vmstate_crc32(buf + 8, MARKER_SIZE - 8)) {
        return false; /* none, torn, or of another layout: no marker */
    }
    out->generation = le_get(buf + 8, 8);
    uuid_to_hex(buf + 16, out->uuid);
    uuid_to_hex(buf + 16 + UUID_BYTES, out->fallback);
    return true;
}

/* The newest marker among the graph's nodes. */
static bool newest_marker(struct block_graph *g, struct marker *out)
{
    bool found = false;
    for (struct block_node *n = block_graph_next(g, NULL); n; n = block_graph_next(g, n)) {
        struct marker mk;
        if (read_marker(n, &mk) && (!found || mk.generation > out->generation)) {
            *out = mk;
            found = true;
        }
    }
    return found;
}

static bool uuid_exists(struct block_graph *g, const char *uuid)
{
    if (!*uuid) {
        return false;
    }
    struct description *d = find_by_uuid(g, uuid);
    describe_free(d);
    return d != NULL;
}

/* The nearest of `ancestors` (parent first) that still exists; "" if none. */
static void nearest_existing(struct block_graph *g, const json_t *ancestors,
                             char out[DESCRIBE_UUID_LEN + 1])
{
    size_t i;
    json_t *a;
    json_array_foreach(ancestors, i, a)
    {
        if (uuid_exists(g, json_string_value(a))) {
            snprintf(out, DESCRIBE_UUID_LEN + 1, "%s", json_string_value(a));
            return;
        }
    }
    out[0] = 0;
}

bool describe_current(struct block_graph *g, char uuid[DESCRIBE_UUID_LEN + 1])
{
    struct marker mk;
    if (!newest_marker(g, &mk)) {
        return false;
    }
    const char *at = uuid_exists(g, mk.uuid)       ? mk.uuid
                     : uuid_exists(g, mk.fallback) ? mk.fallback
                                                   : NULL;
    if (!at) {
        return false;
    }
    snprintf(uuid, DESCRIBE_UUID_LEN + 1, "%s", at);
    return true;
}

static void write_markers(struct machine *m, const struct snapshot_targets *t, const char *uuid,
                          const char *fallback)
{
    struct marker mk = {0};
    if (newest_marker(machine_block_graph(m), &mk)) {
        mk.generation++;
    } else {
        mk.generation = 1;
    }
    uint8_t buf[MARKER_SIZE] = {0};
    le_put(buf, MARKER_MAGIC, 4);
    le_put(buf + 8, mk.generation, 8);
    uuid_from_hex(uuid, buf + 16);
    uuid_from_hex(fallback, buf + 16 + UUID_BYTES);
    le_put(buf + 4, vmstate_crc32(buf + 8, MARKER_SIZE - 8), 4);
    for (size_t i = 0; i < t->count; i++) {
        struct error *err = NULL;
        if (block_header_ext_write(t->nodes[i], DESCRIBE_CURRENT_EXT, buf, sizeof(buf), &err) < 0) {
            log_warn("cannot record the current snapshot on node '%s': %s",
                     block_node_name(t->nodes[i]), err->message);
            error_free(err);
        }
    }
}

/* The VM is at `uuid` (""/NULL: none): the marker names it and its nearest existing ancestor. */
static void mark_at(struct machine *m, const struct snapshot_targets *t, const char *uuid)
{
    char fallback[DESCRIBE_UUID_LEN + 1] = "";
    struct description *d = uuid && *uuid ? find_by_uuid(machine_block_graph(m), uuid) : NULL;
    if (d) {
        nearest_existing(machine_block_graph(m), describe_ancestors(d), fallback);
        describe_free(d);
    }
    write_markers(m, t, uuid, fallback);
}

void describe_set_current(struct machine *m, const struct snapshot_targets *t,
                          const struct description *d)
{
    mark_at(m, t, d ? d->uuid : NULL);
}

void describe_deleted(struct machine *m, const struct snapshot_targets *t,
                      const struct description *gone)
{
    struct block_graph *g = machine_block_graph(m);
    struct marker mk;
    if (!gone || !newest_marker(g, &mk)) {
        return;
    }
    char up[DESCRIBE_UUID_LEN + 1];
    if (!strcmp(mk.uuid, gone->uuid)) {
        /* The VM was at it: its nearest existing ancestor becomes current (as libvirt does). */
        nearest_existing(g, describe_ancestors(gone), up);
        mark_at(m, t, up);
    } else if (!strcmp(mk.fallback, gone->uuid)) {
        /* It was the current snapshot's fallback: the next ancestor up takes its place. */
        nearest_existing(g, describe_ancestors(gone), up);
        write_markers(m, t, mk.uuid, up);
    }
}
