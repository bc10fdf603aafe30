/*
 * The block graph: node creation from -blockdev/blockdev-add options,
 * node-name bookkeeping, the per-node lock, and the dispatch of the public
 * API (block.h) to the drivers.  Drivers never see option objects they did
 * not ask for: common options are parsed and checked here.
 */
#include "block/block-int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/keyval.h"

#define BACKING_MAX_DEPTH 16

struct block_graph {
    struct block_node *first;
    struct block_node *last;
    unsigned auto_names; /* counter for "#blockN" names of inline children */
};

static const struct block_driver *const drivers[] = {
        &block_driver_file,
        &block_driver_raw,
        &block_driver_qcow2,
};

static const char *const common_opts[] = {
        "driver",        "node-name",   "read-only", "auto-read-only", "cache", "discard",
        "detect-zeroes", "force-share", NULL,
};

struct block_graph *block_graph_new(void)
{
    struct block_graph *g = calloc(1, sizeof(*g));
    if (!g) {
        abort();
    }
    return g;
}

static void node_destroy(struct block_node *node)
{
    if (node->drv && node->drv->close) {
        node->drv->close(node);
    }
    if (node->file) {
        node->file->users--;
    }
    pthread_mutex_destroy(&node->lock);
    free(node->name);
    free(node->filename);
    free(node);
}

void block_graph_free(struct block_graph *graph)
{
    if (!graph) {
        return;
    }
    /* Close formats before the files under them: newest first works, since a
     * child always exists before its parent. */
    size_t n = 0;
    for (struct block_node *b = graph->first; b; b = b->next) {
        n++;
    }
    struct block_node **all = calloc(n ? n : 1, sizeof(*all));
    if (!all) {
        abort();
    }
    size_t i = 0;
    for (struct block_node *b = graph->first; b; b = b->next) {
        all[i++] = b;
    }
    while (i > 0) {
        struct block_node *b = all[--i];
        if (!b->read_only && b->drv->flush) {
            struct error *err = NULL;
            if (block_flush(b, &err) < 0) {
                error_report_and_free(err);
            }
        }
        node_destroy(b);
    }
    free(all);
    free(graph);
}

static const struct block_driver *find_driver(const char *name)
{
    for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++) {
        if (!strcmp(drivers[i]->name, name)) {
            return drivers[i];
        }
    }
    return NULL;
}

static bool valid_node_name(const char *s)
{
    /* QEMU's rule: a letter first, then letters, digits, '-', '.', '_'. */
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.' || *p == '_')) {
            return false;
        }
    }
    return strlen(s) < 128;
}

static int check_keys(json_t *opts, const struct block_driver *drv, const char *what,
                      struct error **errp)
{
    const char *key;
    json_t *value;
    json_object_foreach(opts, key, value)
    {
        bool ok = false;
        for (const char *const *a = common_opts; *a && !ok; a++) {
            ok = !strcmp(*a, key);
        }
        for (const char *const *a = drv->extra_opts; a && *a && !ok; a++) {
            ok = !strcmp(*a, key);
        }
        if (!ok) {
            error_setg(errp, "%s: unknown option '%s' for driver '%s'", what, key, drv->name);
            return -1;
        }
    }
    return 0;
}

static int parse_cache(json_t *opts, const char *what, bool *no_flush, struct error **errp)
{
    json_t *cache = json_object_get(opts, "cache");
    if (!cache) {
        return 0;
    }
    if (!json_is_object(cache)) {
        error_setg(errp, "%s: option 'cache' expects an object (cache.no-flush=on)", what);
        return -1;
    }
    static const char *const cache_opts[] = {"direct", "no-flush", NULL};
    char cwhat[300];
    snprintf(cwhat, sizeof(cwhat), "%s cache", what);
    if (kv_check_keys(cache, cache_opts, cwhat, errp) < 0) {
        return -1;
    }
    bool direct = false;
    if (kv_get_bool(cache, "direct", cwhat, &direct, errp) < 0 ||
        kv_get_bool(cache, "no-flush", cwhat, no_flush, errp) < 0) {
        return -1;
    }
    if (direct) {
        error_setg(errp, "%s: cache.direct=on is not supported", what);
        return -1;
    }
    return 0;
}

/* The graph's next "#blockN" name, for nodes the user did not name (as QEMU names them). */
static void auto_name(struct block_graph *graph, char *buf, size_t size)
{
    snprintf(buf, size, "#block%03u", __atomic_add_fetch(&graph->auto_names, 1, __ATOMIC_RELAXED));
}

static struct block_node *node_alloc(const char *name, const struct block_driver *drv)
{
    struct block_node *node = calloc(1, sizeof(*node));
    if (!node) {
        abort();
    }
    node->name = strdup(name);
    node->drv = drv;
    pthread_mutex_init(&node->lock, NULL);
    return node;
}

static void graph_link(struct block_graph *graph, struct block_node *node)
{
    node->graph = graph;
    if (graph->last) {
        graph->last->next = node;
    } else {
        graph->first = node;
    }
    graph->last = node;
}

static struct block_node *graph_add(struct block_graph *graph, json_t *opts, bool parent_ro,
                                    bool parent_share, bool have_parent, struct error **errp);

/* Attach the "file" child of a format node: inline options or a node-name. */
static int attach_file_child(struct block_graph *graph, struct block_node *node, json_t *opts,
                             const char *what, struct error **errp)
{
    json_t *file = json_object_get(opts, "file");
    if (!file) {
        error_setg(errp,
                   "%s: driver '%s' needs a 'file' child (file.driver=file,file.filename=...)",
                   what, node->drv->name);
        return -1;
    }
    struct block_node *child = NULL;
    if (json_is_string(file)) {
        child = block_graph_find(graph, json_string_value(file));
        if (!child) {
            error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND,
                      "%s: no block node named '%s' for option 'file'", what,
                      json_string_value(file));
            return -1;
        }
        if (child->users > 0 && !node->read_only) {
            error_setg(errp, "%s: node '%s' is already used by another format node", what,
                       child->name);
            return -1;
        }
        if (child->read_only && !node->read_only) {
            error_setg(errp, "%s: file child '%s' is read-only but the node is not", what,
                       child->name);
            return -1;
        }
    } else if (json_is_object(file)) {
        child = graph_add(graph, file, node->read_only, node->force_share, true, errp);
        if (!child) {
            error_prepend(errp, "%s", what);
            return -1;
        }
    } else {
        error_setg(errp, "%s: option 'file' expects an object or a node-name", what);
        return -1;
    }
    node->file = child;
    child->users++;
    if (node->no_flush) {
        child->no_flush = true; /* cache.no-flush applies to the whole chain */
    }
    return 0;
}

static struct block_node *graph_add(struct block_graph *graph, json_t *opts, bool parent_ro,
                                    bool parent_share, bool have_parent, struct error **errp)
{
    if (!json_is_object(opts)) {
        error_setg(errp, "-blockdev: expected an object of options");
        return NULL;
    }
    const char *drvname = NULL, *name = NULL;
    char what[256], autoname[32];
    if (kv_get_string(opts, "node-name", "-blockdev", &name, errp) < 0) {
        return NULL;
    }
    if (!name && !have_parent) {
        error_setg(errp, "-blockdev: option 'node-name' is required");
        return NULL;
    }
    if (!name) {
        auto_name(graph, autoname, sizeof(autoname));
        name = autoname;
    } else if (!valid_node_name(name)) {
        error_setg(errp,
                   "-blockdev: invalid node-name '%s' (letters, digits, '-', '.', '_'; a letter "
                   "first)",
                   name);
        return NULL;
    }
    if (name == autoname) {
        snprintf(what, sizeof(what), "its file child");
    } else {
        snprintf(what, sizeof(what), "node '%s'", name);
    }
    if (block_graph_find(graph, name)) {
        error_setg(errp, "%s: duplicate node-name: a node with this name already exists", what);
        return NULL;
    }
    if (kv_get_string(opts, "driver", what, &drvname, errp) < 0) {
        return NULL;
    }
    if (!drvname) {
        error_setg(errp, "%s: option 'driver' is required (file, raw or qcow2)", what);
        return NULL;
    }
    const struct block_driver *drv = find_driver(drvname);
    if (!drv) {
        error_setg(errp, "%s: unknown driver '%s' (supported: file, raw, qcow2)", what, drvname);
        return NULL;
    }
    if (check_keys(opts, drv, what, errp) < 0) {
        return NULL;
    }
    bool ro = parent_ro, no_flush = false, force_share = parent_share;
    if (kv_get_bool(opts, "read-only", what, &ro, errp) < 0 ||
        kv_get_bool(opts, "force-share", what, &force_share, errp) < 0 ||
        parse_cache(opts, what, &no_flush, errp) < 0) {
        return NULL;
    }
    if (have_parent && parent_ro) {
        ro = true; /* a read-only format never writes its file */
    }
    if (force_share && !ro) {
        error_setg(errp, "%s: force-share=on needs read-only=on", what);
        return NULL;
    }
    struct block_node *node = node_alloc(name, drv);
    node->graph = graph; /* its backing chain's nodes are named from it while it opens */
    node->read_only = ro;
    node->no_flush = no_flush;
    node->force_share = force_share;
    if (!drv->is_protocol && attach_file_child(graph, node, opts, what, errp) < 0) {
        node_destroy(node);
        return NULL;
    }
    if (node->file) {
        node->filename = strdup(node->file->filename);
    }
    if (drv->open(node, opts, errp) < 0) {
        error_prepend(errp, "%s", what);
        node->drv = NULL; /* open failed: nothing to close */
        node_destroy(node);
        return NULL;
    }
    graph_link(graph, node);
    return node;
}

struct block_node *block_graph_add(struct block_graph *graph, json_t *opts, struct error **errp)
{
    return graph_add(graph, opts, false, false, false, errp);
}

struct block_node *block_graph_find(struct block_graph *graph, const char *node_name)
{
    for (struct block_node *b = graph->first; b; b = b->next) {
        if (!strcmp(b->name, node_name)) {
            return b;
        }
    }
    return NULL;
}

struct block_node *block_graph_next(struct block_graph *graph, struct block_node *prev)
{
    return prev ? prev->next : graph->first;
}

/* ---- private backing chains ---- */

struct block_node *block_open_backing(struct block_node *parent, const char *filename,
                                      const char *fmt, int depth, struct error **errp)
{
    if (depth > BACKING_MAX_DEPTH) {
        error_setg(errp, "backing chain of '%s' is deeper than %d images (a loop?)",
                   parent->filename, BACKING_MAX_DEPTH);
        return NULL;
    }
    /*
     * Named as QEMU names the nodes it opens for a backing file, from the
     * graph's "#blockN" counter (the file node first), so that
     * query-named-block-nodes lists them under unique names.  They belong
     * to the graph for naming only: not in its node list.
     */
    struct block_graph *graph = parent->graph;
    char fname[32], name[32];
    if (graph) {
        auto_name(graph, fname, sizeof(fname));
        auto_name(graph, name, sizeof(name));
    } else {
        snprintf(fname, sizeof(fname), "#backing%d", depth);
        snprintf(name, sizeof(name), "#backing%d", depth);
    }
    struct block_node *file = node_alloc(fname, &block_driver_file);
    file->graph = graph;
    file->read_only = true;
    json_t *fopts = json_pack("{s:s, s:s}", "driver", "file", "filename", filename);
    int rc = file->drv->open(file, fopts, errp);
    json_decref(fopts);
    if (rc < 0) {
        file->drv = NULL;
        node_destroy(file);
        return NULL;
    }
    if (!fmt) {
        uint8_t magic[4] = {0};
        if (bdrv_child_pread(file, 0, magic, 4, errp) < 0) {
            node_destroy(file);
            return NULL;
        }
        fmt = memcmp(magic, "QFI\xfb", 4) ? "raw" : "qcow2";
    }
    const struct block_driver *drv = find_driver(fmt);
    if (!drv || drv->is_protocol) {
        error_setg(errp, "backing file '%s' has unsupported format '%s'", filename, fmt);
        node_destroy(file);
        return NULL;
    }
    struct block_node *node = node_alloc(name, drv);
    node->graph = graph;
    node->read_only = true;
    node->file = file;
    file->users++;
    node->filename = strdup(filename);
    json_t *opts = json_pack("{s:i}", "#depth", depth);
    rc = drv->open(node, opts, errp);
    json_decref(opts);
    if (rc < 0) {
        node->drv = NULL;
        node_destroy(node);
        node_destroy(file);
        return NULL;
    }
    return node;
}

void block_node_close_private(struct block_node *node)
{
    if (!node) {
        return;
    }
    struct block_node *file = node->file;
    node_destroy(node);
    if (file) {
        node_destroy(file);
    }
}

/* ---- accessors ---- */

const char *block_node_name(const struct block_node *node)
{
    return node->name;
}

const char *block_node_driver(const struct block_node *node)
{
    return node->drv->name;
}

const char *block_node_filename(const struct block_node *node)
{
    return node->filename;
}

struct block_node *block_node_file_child(const struct block_node *node)
{
    return node->file;
}

bool block_node_read_only(const struct block_node *node)
{
    return node->read_only;
}

uint64_t block_node_length(const struct block_node *node)
{
    struct block_node *n = (struct block_node *)node;
    pthread_mutex_lock(&n->lock);
    uint64_t len = n->drv->length(n);
    pthread_mutex_unlock(&n->lock);
    return len;
}

bool block_node_can_snapshot(const struct block_node *node)
{
    return node->drv->snapshot_create != NULL;
}

int block_node_host_fd(struct block_node *node)
{
    while (node && !node->drv->host_fd) {
        node = node->file;
    }
    return node ? node->drv->host_fd(node) : -1;
}

uint32_t block_node_cluster_size(const struct block_node *node)
{
    return node->drv->cluster_size ? node->drv->cluster_size(node) : 0;
}

struct block_node *block_node_backing(const struct block_node *node)
{
    return node->drv->backing ? node->drv->backing(node) : NULL;
}

bool block_node_no_flush(const struct block_node *node)
{
    return node->no_flush;
}

/* ---- I/O ---- */

static int check_request(struct block_node *node, uint64_t off, size_t len, bool write,
                         struct error **errp)
{
    if (write && node->read_only) {
        error_setg(errp, "node '%s' is read-only", node->name);
        return -1;
    }
    if (node->drv->is_protocol) {
        return 0; /* the protocol layer grows on write and reads zeros past EOF */
    }
    uint64_t size = node->drv->length(node);
    if (off > size || len > size - off) {
        error_setg(errp,
                   "node '%s': request at offset %llu length %zu is beyond the end of the "
                   "disk (%llu bytes)",
                   node->name, (unsigned long long)off, len, (unsigned long long)size);
        return -1;
    }
    return 0;
}

int block_pread(struct block_node *node, uint64_t offset, void *buf, size_t len,
                struct error **errp)
{
    pthread_mutex_lock(&node->lock);
    int rc = check_request(node, offset, len, false, errp);
    if (rc == 0) {
        rc = node->drv->pread(node, offset, buf, len, errp);
    }
    pthread_mutex_unlock(&node->lock);
    return rc;
}

int block_pwrite(struct block_node *node, uint64_t offset, const void *buf, size_t len,
                 struct error **errp)
{
    pthread_mutex_lock(&node->lock);
    int rc = check_request(node, offset, len, true, errp);
    if (rc == 0) {
        rc = node->drv->pwrite(node, offset, buf, len, errp);
    }
    pthread_mutex_unlock(&node->lock);
    return rc;
}

int block_flush(struct block_node *node, struct error **errp)
{
    if (node->read_only) {
        return 0;
    }
    pthread_mutex_lock(&node->lock);
    int rc = node->drv->flush ? node->drv->flush(node, errp) : 0;
    pthread_mutex_unlock(&node->lock);
    return rc;
}

int bdrv_child_pread(struct block_node *child, uint64_t off, void *buf, size_t len,
                     struct error **errp)
{
    pthread_mutex_lock(&child->lock);
    int rc = child->drv->pread(child, off, buf, len, errp);
    pthread_mutex_unlock(&child->lock);
    return rc;
}

int bdrv_child_pwrite(struct block_node *child, uint64_t off, const void *buf, size_t len,
                      struct error **errp)
{
    pthread_mutex_lock(&child->lock);
    int rc = child->drv->pwrite(child, off, buf, len, errp);
    pthread_mutex_unlock(&child->lock);
    return rc;
}

int bdrv_child_flush(struct block_node *child, struct error **errp)
{
    if (child->no_flush) {
        return 0;
    }
    pthread_mutex_lock(&child->lock);
    int rc = child->drv->flush ? child->drv->flush(child, errp) : 0;
    pthread_mutex_unlock(&child->lock);
    return rc;
}

uint64_t bdrv_child_length(struct block_node *child)
{
    pthread_mutex_lock(&child->lock);
    uint64_t len = child->drv->length(child);
    pthread_mutex_unlock(&child->lock);
    return len;
}

/* ---- snapshots ---- */

static int need_snapshots(struct block_node *node, bool write, struct error **errp)
{
    if (!node->drv->snapshot_create) {
        error_setg(errp, "node '%s' (driver '%s') does not support internal snapshots; use qcow2",
                   node->name, node->drv->name);
        return -1;
    }
    if (write && node->read_only) {
        error_setg(errp, "node '%s' is read-only", node->name);
        return -1;
    }
    return 0;
}

int block_snapshot_list(struct block_node *node, struct block_snapshot_info **list, size_t *count,
                        struct error **errp)
{
    *list = NULL;
    *count = 0;
    if (!node->drv->snapshot_list) {
        return 0; /* formats without snapshots simply have none */
    }
    pthread_mutex_lock(&node->lock);
    int rc = node->drv->snapshot_list(node, list, count, errp);
    pthread_mutex_unlock(&node->lock);
    return rc;
}

int block_snapshot_find(struct block_node *node, const char *name_or_id,
                        struct block_snapshot_info *out)
{
    struct block_snapshot_info *list = NULL;
    size_t n = 0;
    if (block_snapshot_list(node, &list, &n, NULL) < 0) {
        return -1;
    }
    int found = -1;
    for (size_t pass = 0; pass < 2 && found < 0; pass++) {
        for (size_t i = 0; i < n; i++) {
            const char *key = pass == 0 ? list[i].name : list[i].id;
            if (!list[i].truncated && !strcmp(key, name_or_id)) {
                if (out) {
                    *out = list[i];
                }
                found = 0;
                break;
            }
        }
    }
    free(list);
    return found;
}

#define SNAP_CALL(node, write, call)                                                               \
    do {                                                                                           \
        if (need_snapshots(node, write, errp) < 0) {                                               \
            return -1;                                                                             \
        }                                                                                          \
        pthread_mutex_lock(&(node)->lock);                                                         \
        int rc_ = (call);                                                                          \
        pthread_mutex_unlock(&(node)->lock);                                                       \
        return rc_;                                                                                \
    } while (0)

int block_vmstate_write(struct block_node *node, uint64_t pos, const void *buf, size_t len,
                        struct error **errp)
{
    SNAP_CALL(node, true, node->drv->vmstate_write(node, pos, buf, len, errp));
}

int block_vmstate_read(struct block_node *node, uint64_t pos, void *buf, size_t len,
                       struct error **errp)
{
    SNAP_CALL(node, false, node->drv->vmstate_read(node, pos, buf, len, errp));
}

int block_vmstate_write_ram(struct block_node *node, const struct block_vmstate_run *runs, size_t n,
                            uint64_t *page_map, uint64_t map_pos, bool in_flight,
                            struct error **errp)
{
    SNAP_CALL(node, true,
              node->drv->vmstate_write_ram(node, runs, n, page_map, map_pos, in_flight, errp));
}

int block_vmstate_ram_wait(struct block_node *node, struct error **errp)
{
    SNAP_CALL(node, true, node->drv->vmstate_ram_wait(node, errp));
}

int block_vmstate_share(struct block_node *node, const char *id, struct error **errp)
{
    SNAP_CALL(node, true, node->drv->vmstate_share(node, id, errp));
}

bool block_vmstate_shares(struct block_node *node, const char *id)
{
    if (!node->drv->vmstate_shares) {
        return false;
    }
    pthread_mutex_lock(&node->lock);
    bool r = node->drv->vmstate_shares(node, id);
    pthread_mutex_unlock(&node->lock);
    return r;
}

int block_snapshot_space(struct block_node *node, const char *name_or_id, uint64_t *stored,
                         uint64_t *exclusive, struct error **errp)
{
    SNAP_CALL(node, false, node->drv->snapshot_space(node, name_or_id, stored, exclusive, errp));
}

int block_vmstate_discard(struct block_node *node, struct error **errp)
{
    SNAP_CALL(node, true, node->drv->vmstate_discard(node, errp));
}

int block_snapshot_create(struct block_node *node, struct block_snapshot_info *info,
                          struct error **errp)
{
    SNAP_CALL(node, true, node->drv->snapshot_create(node, info, errp));
}

int block_snapshot_goto(struct block_node *node, const char *name_or_id, struct error **errp)
{
    SNAP_CALL(node, true, node->drv->snapshot_goto(node, name_or_id, errp));
}

int block_snapshot_delete(struct block_node *node, const char *name_or_id, struct error **errp)
{
    SNAP_CALL(node, true, node->drv->snapshot_delete(node, name_or_id, errp));
}

int block_snapshot_vmstate_read(struct block_node *node, const char *name_or_id, uint64_t pos,
                                void *buf, size_t len, struct error **errp)
{
    SNAP_CALL(node, false, node->drv->snapshot_vmstate_read(node, name_or_id, pos, buf, len, errp));
}

void block_extent_append(struct block_extent **v, size_t *n, size_t *cap, struct block_extent e)
{
    struct block_extent *last = *n ? &(*v)[*n - 1] : NULL;
    if (last && last->kind == e.kind && last->pos + last->len == e.pos &&
        (e.kind != BLOCK_EXTENT_DATA || last->host_offset + last->len == e.host_offset)) {
        last->len += e.len;
        return;
    }
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *v = realloc(*v, *cap * sizeof(**v));
        if (!*v) {
            abort();
        }
    }
    (*v)[(*n)++] = e;
}

int block_snapshot_vmstate_map(struct block_node *node, const char *name_or_id, uint64_t pos,
                               uint64_t len, struct block_extent **extents, size_t *count,
                               struct error **errp)
{
    *extents = NULL;
    *count = 0;
    SNAP_CALL(node, false,
              node->drv->snapshot_vmstate_map(node, name_or_id, pos, len, extents, count, errp));
}

/* ---- transactions ---- */

struct block_txn {
    struct block_node *node;
    void *drv_txn;
};

static int txn_prepare(struct block_node *node, struct block_txn **txn, struct error **errp, int rc,
                       void *drv_txn)
{
    if (rc < 0) {
        return -1;
    }
    if (!drv_txn) {
        return 0; /* nothing to do: *txn stays NULL */
    }
    *txn = calloc(1, sizeof(**txn));
    if (!*txn) {
        abort();
    }
    (*txn)->node = node;
    (*txn)->drv_txn = drv_txn;
    (void)errp;
    return 0;
}

#define TXN_PREPARE(node, call)                                                                    \
    do {                                                                                           \
        *txn = NULL;                                                                               \
        if (need_snapshots(node, true, errp) < 0) {                                                \
            return -1;                                                                             \
        }                                                                                          \
        void *drv_txn_ = NULL;                                                                     \
        pthread_mutex_lock(&(node)->lock);                                                         \
        int rc_ = (call);                                                                          \
        pthread_mutex_unlock(&(node)->lock);                                                       \
        return txn_prepare(node, txn, errp, rc_, drv_txn_);                                        \
    } while (0)

int block_snapshot_create_prepare(struct block_node *node, struct block_snapshot_info *info,
                                  struct block_txn **txn, struct error **errp)
{
    TXN_PREPARE(node, node->drv->snapshot_create_prepare(node, info, &drv_txn_, errp));
}

int block_snapshot_replace_prepare(struct block_node *node, const char *old_id,
                                   struct block_snapshot_info *info, struct block_txn **txn,
                                   struct error **errp)
{
    TXN_PREPARE(node, node->drv->snapshot_replace_prepare(node, old_id, info, &drv_txn_, errp));
}

int block_snapshot_goto_prepare(struct block_node *node, const char *name_or_id,
                                struct block_txn **txn, struct error **errp)
{
    TXN_PREPARE(node, node->drv->snapshot_goto_prepare(node, name_or_id, &drv_txn_, errp));
}

int block_snapshot_delete_prepare(struct block_node *node, const char *name_or_id,
                                  struct block_txn **txn, struct error **errp)
{
    TXN_PREPARE(node, node->drv->snapshot_delete_prepare(node, name_or_id, &drv_txn_, errp));
}

int block_snapshot_txn_commit(struct block_txn *txn, struct error **errp)
{
    if (!txn) {
        return 0;
    }
    pthread_mutex_lock(&txn->node->lock);
    int rc = txn->node->drv->txn_commit(txn->node, txn->drv_txn, errp);
    pthread_mutex_unlock(&txn->node->lock);
    return rc;
}

int block_snapshot_txn_abort(struct block_txn *txn, struct error **errp)
{
    if (!txn) {
        return 0;
    }
    pthread_mutex_lock(&txn->node->lock);
    int rc = txn->node->drv->txn_abort(txn->node, txn->drv_txn, errp);
    pthread_mutex_unlock(&txn->node->lock);
    free(txn);
    return rc;
}

void block_snapshot_txn_finish(struct block_txn *txn)
{
    if (!txn) {
        return;
    }
    pthread_mutex_lock(&txn->node->lock);
    txn->node->drv->txn_finish(txn->node, txn->drv_txn);
    pthread_mutex_unlock(&txn->node->lock);
    free(txn);
}
int block_header_ext_read(struct block_node *node, uint32_t type, void *buf, size_t len,
                          size_t *out_len, struct error **errp)
{
    *out_len = 0;
    if (!node->drv->header_ext_read) {
        return 0; /* no header: no extension */
    }
    pthread_mutex_lock(&node->lock);
    int rc = node->drv->header_ext_read(node, type, buf, len, out_len, errp);
    pthread_mutex_unlock(&node->lock);
    return rc;
}

int block_header_ext_write(struct block_node *node, uint32_t type, const void *buf, size_t len,
                           struct error **errp)
{
    if (!node->drv->header_ext_write) {
        error_setg(errp, "node '%s' (driver '%s') has no header to hold extension %#x", node->name,
                   node->drv->name, type);
        return -1;
    }
    if (node->read_only) {
        error_setg(errp, "node '%s' is read-only", node->name);
        return -1;
    }
    pthread_mutex_lock(&node->lock);
    int rc = node->drv->header_ext_write(node, type, buf, len, errp);
    pthread_mutex_unlock(&node->lock);
    return rc;
}
