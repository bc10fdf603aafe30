/*
 * qcow2 internal snapshots: the snapshot table (parsed with bounds checks,
 * rewritten with unknown extra data kept byte for byte), snapshot
 * create/goto/delete, and the vmstate area (past the guest disk, at the
 * first L1 entry that describes no guest cluster, as the qcow2 spec puts
 * it).
 *
 * Every operation writes new things to unreferenced clusters, flushes, then
 * flips one pointer in the header (nb_snapshots+snapshots_offset, or
 * l1_size+l1_table_offset: adjacent fields, one write inside sector 0),
 * flushes, and frees the old things last.  Refcounts are raised before the
 * pointer flip and lowered after it, so a crash leaves the old or the new
 * state plus leaked clusters at most.  The orderings are spelled out at
 * each operation.
 */
#include "block/qcow2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define SNAP_HDR       40
#define SNAP_EXTRA_NEW 24 /* vm_state_size (64-bit), disk_size, icount */

static void free_snapshot_fields(struct qcow2_snapshot *sn)
{
    free(sn->id);
    free(sn->name);
    free(sn->extra);
}

void qcow2_free_snapshots(struct qcow2_snapshot *snaps, uint32_t n)
{
    for (uint32_t i = 0; snaps && i < n; i++) {
        free_snapshot_fields(&snaps[i]);
    }
    free(snaps);
}

static char *read_string(struct qcow2_state *s, uint64_t off, uint32_t len, struct error **errp)
{
    char *str = malloc(len + 1);
    if (!str) {
        abort();
    }
    if (qcow2_file_pread(s, off, str, len, errp) < 0) {
        free(str);
        return NULL;
    }
    str[len] = 0;
    return str;
}

static int read_one(struct qcow2_state *s, uint64_t p, uint64_t fsize, struct qcow2_snapshot *sn,
                    uint64_t *next, struct error **errp)
{
    uint8_t h[SNAP_HDR];
    if (p + SNAP_HDR > fsize || qcow2_file_pread(s, p, h, SNAP_HDR, errp) < 0) {
        error_setg(errp, "snapshot table runs past the end of the file");
        return -1;
    }
    sn->l1_offset = be64_get(h);
    sn->l1_size = be32_get(h + 8);
    uint32_t id_len = be16_get(h + 12), name_len = be16_get(h + 14);
    sn->date_sec = be32_get(h + 16);
    sn->date_nsec = be32_get(h + 20);
    sn->vm_clock_nsec = be64_get(h + 24);
    sn->vm_state_size = be32_get(h + 32);
    sn->extra_size = be32_get(h + 36);
    sn->disk_size = s->size;
    if (sn->extra_size > QCOW2_MAX_SNAPSHOT_EXTRA) {
        error_setg(errp, "snapshot extra data of %u bytes exceeds %u", sn->extra_size,
                   QCOW2_MAX_SNAPSHOT_EXTRA);
        return -1;
    }
    uint64_t end = p + SNAP_HDR + sn->extra_size + id_len + name_len;
    if (end > fsize || end - s->snapshots_offset > QCOW2_MAX_SNAPTABLE) {
        error_setg(errp, "snapshot table runs past the end of the file");
        return -1;
    }
    sn->extra = malloc(sn->extra_size ? sn->extra_size : 1);
    if (!sn->extra) {
        abort();
    }
    if (qcow2_file_pread(s, p + SNAP_HDR, sn->extra, sn->extra_size, errp) < 0) {
        return -1;
    }
    if (sn->extra_size >= 8) {
        sn->vm_state_size = be64_get(sn->extra);
    }
    if (sn->extra_size >= 16) {
        sn->disk_size = be64_get(sn->extra + 8);
    }
    sn->id = read_string(s, p + SNAP_HDR + sn->extra_size, id_len, errp);
    sn->name =
            sn->id ? read_string(s, p + SNAP_HDR + sn->extra_size + id_len, name_len, errp) : NULL;
    if (!sn->name) {
        return -1;
    }
    /* Names and ids are compared whole: a NUL inside one would hide the rest. */
    if (strlen(sn->id) != id_len || strlen(sn->name) != name_len) {
        error_setg(errp, "snapshot '%.64s': its %s (%u bytes) contains a NUL byte", sn->name,
                   strlen(sn->id) != id_len ? "id" : "name",
                   strlen(sn->id) != id_len ? id_len : name_len);
        return -1;
    }
    if ((sn->l1_offset & (s->cluster_size - 1)) || (uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
        sn->l1_offset > fsize || (uint64_t)sn->l1_size * 8 > fsize - sn->l1_offset ||
        (sn->l1_size && !sn->l1_offset)) {
        error_setg(errp, "snapshot '%s' has an invalid L1 table (offset %#llx, %u entries)",
                   sn->name, (unsigned long long)sn->l1_offset, sn->l1_size);
        return -1;
    }
    *next = (end + 7) & ~7ull;
    return 0;
}

static int cmp_snapshot_id(const void *a, const void *b)
{
    const struct qcow2_snapshot *const *x = a, *const *y = b;
    return strcmp((*x)->id, (*y)->id);
}

int qcow2_read_snapshots(struct qcow2_state *s, struct error **errp)
{
    uint64_t fsize = file_node_size(s->file);
    s->snaps = calloc(s->nb_snapshots ? s->nb_snapshots : 1, sizeof(*s->snaps));
    if (!s->snaps) {
        abort();
    }
    uint64_t p = s->snapshots_offset;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (read_one(s, p, fsize, &s->snaps[i], &p, errp) < 0) {
            error_prepend(errp, "snapshot %u", i);
            return -1;
        }
    }
    s->snapshots_size = s->nb_snapshots ? p - s->snapshots_offset : 0;
    /* Ids must be unique (lookups by id would pick one of two at random). */
    const struct qcow2_snapshot **by_id = calloc(s->nb_snapshots + 1, sizeof(*by_id));
    if (!by_id) {
        abort();
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        by_id[i] = &s->snaps[i];
    }
    qsort(by_id, s->nb_snapshots, sizeof(*by_id), cmp_snapshot_id);
    for (uint32_t i = 1; i < s->nb_snapshots; i++) {
        if (!strcmp(by_id[i]->id, by_id[i - 1]->id)) {
            error_setg(errp,
                       "the snapshot table has two snapshots with id '%.64s' ('%.64s' and "
                       "'%.64s')",
                       by_id[i]->id, by_id[i - 1]->name, by_id[i]->name);
            free(by_id);
            return -1;
        }
    }
    free(by_id);
    return 0;
}

static size_t entry_size(const struct qcow2_snapshot *sn)
{
    return (SNAP_HDR + sn->extra_size + strlen(sn->id) + strlen(sn->name) + 7) & ~(size_t)7;
}

static void serialize(const struct qcow2_snapshot *sn, uint8_t *p)
{
    size_t id_len = strlen(sn->id), name_len = strlen(sn->name);
    memset(p, 0, entry_size(sn));
    be64_put(p, sn->l1_offset);
    be32_put(p + 8, sn->l1_size);
    be16_put(p + 12, (uint16_t)id_len);
    be16_put(p + 14, (uint16_t)name_len);
    be32_put(p + 16, sn->date_sec);
    be32_put(p + 20, sn->date_nsec);
    be64_put(p + 24, sn->vm_clock_nsec);
    be32_put(p + 32, sn->vm_state_size > UINT32_MAX ? 0 : (uint32_t)sn->vm_state_size);
    be32_put(p + 36, sn->extra_size);
    memcpy(p + SNAP_HDR, sn->extra, sn->extra_size);
    memcpy(p + SNAP_HDR + sn->extra_size, sn->id, id_len);
    memcpy(p + SNAP_HDR + sn->extra_size + id_len, sn->name, name_len);
}

static int find_snapshot(struct qcow2_state *s, const char *name_or_id)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (!strcmp(s->snaps[i].name, name_or_id)) {
            return (int)i;
        }
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (!strcmp(s->snaps[i].id, name_or_id)) {
            return (int)i;
        }
    }
    return -1;
}

struct qcow2_snapshot *qcow2_snapshot_lookup(struct qcow2_state *s, const char *name_or_id,
                                             struct error **errp)
{
    int i = find_snapshot(s, name_or_id);
    if (i < 0) {
        error_setg(errp, "node '%s' has no snapshot '%s'", s->node->name, name_or_id);
        return NULL;
    }
    return &s->snaps[i];
}

uint64_t *qcow2_read_snapshot_l1(struct qcow2_state *s, const struct qcow2_snapshot *sn,
                                 struct error **errp)
{
    uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, sizeof(uint64_t));
    if (!l1) {
        abort();
    }
    if (sn->l1_size && qcow2_read_table(s, sn->l1_offset, l1, sn->l1_size, errp) < 0) {
        free(l1);
        return NULL;
    }
    uint64_t fsize = file_node_size(s->file);
    for (uint32_t i = 0; i < sn->l1_size; i++) {
        uint64_t off = l1[i] & L1E_OFFSET_MASK;
        if ((off & (s->cluster_size - 1)) || (off && off + s->cluster_size > fsize)) {
            error_setg(errp, "snapshot '%s': L1 entry %u points outside the file", sn->name, i);
            free(l1);
            return NULL;
        }
        l1[i] = off;
    }
    return l1;
}

int qcow2_snapshot_list(struct block_node *node, struct block_snapshot_info **list, size_t *count,
                        struct error **errp)
{
    (void)errp;
    struct qcow2_state *s = node->opaque;
    *list = calloc(s->nb_snapshots ? s->nb_snapshots : 1, sizeof(**list));
    if (!*list) {
        abort();
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        struct block_snapshot_info *d = &(*list)[i];
        const struct qcow2_snapshot *sn = &s->snaps[i];
        /* A foreign image may hold longer strings than the info can: such an
         * entry is listed cut, and flagged so that nobody looks it up cut. */
        d->truncated = strlen(sn->id) >= sizeof(d->id) || strlen(sn->name) >= sizeof(d->name);
        snprintf(d->id, sizeof(d->id), "%.*s", (int)sizeof(d->id) - 1, sn->id);
        snprintf(d->name, sizeof(d->name), "%.*s", (int)sizeof(d->name) - 1, sn->name);
        d->vm_state_size = sn->vm_state_size;
        d->date_sec = sn->date_sec;
        d->date_nsec = sn->date_nsec;
        d->vm_clock_nsec = sn->vm_clock_nsec;
        d->disk_size = sn->disk_size;
    }
    *count = s->nb_snapshots;
    return 0;
}

/* A tag or id is stored and compared whole: no control characters, and it
 * must fit block_snapshot_info (what it cannot hold would be cut). */
static int check_snapshot_string(struct qcow2_state *s, const char *what, const char *str,
                                 size_t max, struct error **errp)
{
    size_t len = strnlen(str, max);
    if (len >= max) {
        error_setg(errp, "node '%s': snapshot %s is longer than %zu bytes", s->node->name, what,
                   max - 1);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)str[i];
        if (c < 0x20 || c == 0x7f) {
            error_setg(errp, "node '%s': snapshot %s '%.64s' contains control character %#x",
                       s->node->name, what, str, c);
            return -1;
        }
    }
    return 0;
}

static int check_new_snapshot(struct qcow2_state *s, struct block_snapshot_info *info,
                              const struct qcow2_snapshot *replacing, struct error **errp)
{
    if (check_snapshot_string(s, "name", info->name, sizeof(info->name), errp) < 0 ||
        check_snapshot_string(s, "id", info->id, sizeof(info->id), errp) < 0) {
        return -1;
    }
    if (s->refcount_order == 0) {
        error_setg(errp, "node '%s': refcount_bits=1 cannot count the references of a snapshot",
                   s->node->name);
        return -1;
    }
    if (!info->name[0]) {
        error_setg(errp, "node '%s': a snapshot needs a name", s->node->name);
        return -1;
    }
    if (s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS && !replacing) {
        error_setg(errp, "node '%s' already has %u snapshots", s->node->name, s->nb_snapshots);
        return -1;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (&s->snaps[i] == replacing) {
            continue; /* it goes in the same commit */
        }
        if (!strcmp(s->snaps[i].name, info->name)) {
            error_setg(errp, "node '%s' already has a snapshot named '%s'", s->node->name,
                       info->name);
            return -1;
        }
        if (info->id[0] && !strcmp(s->snaps[i].id, info->id)) {
            error_setg(errp, "node '%s' already has a snapshot with id '%s'", s->node->name,
                       info->id);
            return -1;
        }
    }
    if (!info->id[0]) {
        unsigned long long max = 0;
        for (uint32_t i = 0; i < s->nb_snapshots; i++) {
            unsigned long long v = strtoull(s->snaps[i].id, NULL, 10);
            max = v > max ? v : max;
        }
        snprintf(info->id, sizeof(info->id), "%llu", max + 1);
    }
    return 0;
}

static void fill_new_snapshot(struct qcow2_state *s, const struct block_snapshot_info *info,
                              uint64_t l1_offset, struct qcow2_snapshot *sn)
{
    memset(sn, 0, sizeof(*sn));
    sn->l1_offset = l1_offset;
    sn->l1_size = s->l1_size;
    sn->id = strdup(info->id);
    sn->name = strdup(info->name);
    sn->date_sec = (uint32_t)info->date_sec;
    sn->date_nsec = info->date_nsec;
    sn->vm_clock_nsec = info->vm_clock_nsec;
    sn->vm_state_size = info->vm_state_size;
    sn->disk_size = s->size;
    sn->extra_size = SNAP_EXTRA_NEW;
    sn->extra = malloc(SNAP_EXTRA_NEW);
    if (!sn->extra) {
        abort();
    }
    be64_put(sn->extra, sn->vm_state_size);
    be64_put(sn->extra + 8, sn->disk_size);
    be64_put(sn->extra + 16, UINT64_MAX); /* icount: record/replay not used */
}

uint32_t qcow2_guest_l1_entries(const struct qcow2_state *s, uint32_t l1_size)
{
    return s->l1_vm_state_index < l1_size ? s->l1_vm_state_index : l1_size;
}

/* ---- transactions ---- */

/*
 * One snapshot operation on one node.  The "view" is what the header's
 * bytes 36..71 select: the active L1 (l1_size, l1_table_offset) and the
 * snapshot table (nb_snapshots, snapshots_offset); the refcount table fields
 * between them are written with their current values.  36 bytes inside
 * sector 0: one sector-atomic write switches both.
 */
struct qcow2_view {
    uint64_t *l1; /* host order, owned */
    uint32_t l1_size;
    uint64_t l1_offset;
    struct qcow2_snapshot *snaps; /* owned (deep copies) */
    uint32_t nb_snapshots;
    uint64_t snapshots_offset, snapshots_size;
};

struct cluster_run {
    uint64_t off, n;
};

enum txn_state { TXN_PREPARED, TXN_COMMITTED, TXN_UNKNOWN };

struct qcow2_txn {
    const char *what; /* "creating snapshot 'x'", for messages */
    char *what_buf;
    enum txn_state state;
    struct qcow2_view old, new;
    /* Undone by abort: clusters prepare allocated, refcounts it raised. */
    struct cluster_run new_runs[3];
    size_t n_new_runs;
    uint64_t *raised_l1;
    uint32_t raised_to;
    /* Done by finish: references the old state held that the new one lacks. */
    struct cluster_run old_runs[4];
    size_t n_old_runs;
    uint64_t *drop_l1;
    uint32_t drop_from, drop_to;
    bool fix_copied_after;  /* refcounts fall in finish: re-establish COPIED flags */
    bool copied_after_undo; /* raised refcounts were lowered again: the same */
};

static void add_run(struct cluster_run *runs, size_t *n, uint64_t off, uint64_t clusters)
{
    if (off && clusters) {
        runs[(*n)++] = (struct cluster_run){off, clusters};
    }
}

static struct qcow2_snapshot *dup_snapshots(const struct qcow2_snapshot *src, uint32_t n,
                                            uint32_t extra)
{
    struct qcow2_snapshot *d = calloc(n + extra ? n + extra : 1, sizeof(*d));
    if (!d) {
        abort();
    }
    for (uint32_t i = 0; i < n; i++) {
        d[i] = src[i];
        d[i].id = strdup(src[i].id);
        d[i].name = strdup(src[i].name);
        d[i].extra = malloc(src[i].extra_size ? src[i].extra_size : 1);
        if (!d[i].id || !d[i].name || !d[i].extra) {
            abort();
        }
        memcpy(d[i].extra, src[i].extra, src[i].extra_size);
    }
    return d;
}

static uint64_t *dup_l1(const uint64_t *l1, uint32_t n, uint64_t alloc_entries)
{
    uint64_t *d = calloc(alloc_entries > n ? alloc_entries : (n ? n : 1), sizeof(uint64_t));
    if (!d) {
        abort();
    }
    memcpy(d, l1, (size_t)n * 8);
    return d;
}

/* The view the in-memory state describes now (copied). */
static void current_view(struct qcow2_state *s, struct qcow2_view *v)
{
    v->l1 = dup_l1(s->l1, s->l1_size, 0);
    v->l1_size = s->l1_size;
    v->l1_offset = s->l1_offset;
    v->snaps = dup_snapshots(s->snaps, s->nb_snapshots, 0);
    v->nb_snapshots = s->nb_snapshots;
    v->snapshots_offset = s->snapshots_offset;
    v->snapshots_size = s->snapshots_size;
}

static void free_view(struct qcow2_view *v)
{
    free(v->l1);
    qcow2_free_snapshots(v->snaps, v->nb_snapshots);
    memset(v, 0, sizeof(*v));
}

/* Make the in-memory state describe view v (taking v's tables; v is emptied). */
static void install_view(struct qcow2_state *s, struct qcow2_view *v)
{
    free(s->l1);
    qcow2_free_snapshots(s->snaps, s->nb_snapshots);
    s->l1 = v->l1;
    s->l1_size = v->l1_size;
    s->l1_offset = v->l1_offset;
    s->snaps = v->snaps;
    s->nb_snapshots = v->nb_snapshots;
    s->snapshots_offset = v->snapshots_offset;
    s->snapshots_size = v->snapshots_size;
    s->dbuf_entry = 0;
    qcow2_meta_changed(s);
    memset(v, 0, sizeof(*v));
}

static void view_header(const struct qcow2_state *s, const struct qcow2_view *v, uint8_t hdr[36])
{
    be32_put(hdr, v->l1_size);
    be64_put(hdr + 4, v->l1_offset);
    be64_put(hdr + 12, s->reftable_offset);
    be32_put(hdr + 20, s->reftable_clusters);
    be32_put(hdr + 24, v->nb_snapshots);
    be64_put(hdr + 28, v->snapshots_offset);
}

/* Write v's header fields: the single write that is every operation's commit point. */
static int write_view(struct qcow2_state *s, const struct qcow2_view *v, struct error **errp)
{
    uint8_t hdr[36];
    view_header(s, v, hdr);
    return qcow2_write_header_field(s, QCOW2_HDR_L1, hdr, sizeof(hdr), errp);
}

/* Which view does the header on disk select now?  0 old, 1 new, -1 unknown. */
static int read_back_view(struct qcow2_state *s, const struct qcow2_txn *t)
{
    uint8_t disk[36], o[36], n[36];
    if (qcow2_file_pread(s, QCOW2_HDR_L1, disk, sizeof(disk), NULL) < 0) {
        return -1;
    }
    view_header(s, &t->old, o);
    view_header(s, &t->new, n);
    return !memcmp(disk, o, 36) ? 0 : !memcmp(disk, n, 36) ? 1 : -1;
}

static struct qcow2_txn *txn_new(struct qcow2_state *s, const char *fmt, const char *arg)
{
    struct qcow2_txn *t = calloc(1, sizeof(*t));
    if (!t || asprintf(&t->what_buf, fmt, arg) < 0) {
        abort();
    }
    t->what = t->what_buf;
    current_view(s, &t->old);
    return t;
}

static void txn_free(struct qcow2_txn *t)
{
    free_view(&t->old);
    free_view(&t->new);
    free(t->raised_l1);
    free(t->drop_l1);
    free(t->what_buf);
    free(t);
}

/*
 * Free runs of clusters cluster by cluster, remembering progress in the
 * runs themselves: a retry after a failure never frees a cluster twice.
 */
static int free_runs(struct qcow2_state *s, struct cluster_run *runs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct cluster_run *r = &runs[i];
        while (r->n) {
            if (qcow2_free_clusters(s, r->off, 1, NULL) < 0) {
                return -1;
            }
            r->off += s->cluster_size;
            r->n--;
        }
    }
    return 0;
}

/* Undo what prepare did (nothing on disk refers to it).  Failures only leak. */
static int undo_step_free(struct qcow2_state *s, struct qcow2_txn *t)
{
    return free_runs(s, t->new_runs, t->n_new_runs);
}

static int undo_step_lower(struct qcow2_state *s, struct qcow2_txn *t)
{
    if (t->raised_l1 && qcow2_update_l1_refcounts(s, t->raised_l1, 0, t->raised_to, -1, NULL) < 0) {
        return -1;
    }
    free(t->raised_l1);
    t->raised_l1 = NULL;
    t->copied_after_undo = true;
    return 0;
}

static int undo_step_copied(struct qcow2_state *s, struct qcow2_txn *t)
{
    return t->copied_after_undo ? qcow2_fix_copied(s, NULL) : 0;
}

static void cleanup_step(struct qcow2_state *s, struct qcow2_txn *t, int rc1,
                         int (*again)(struct qcow2_state *, struct qcow2_txn *), const char *what);

/* Undo what prepare did (nothing on disk refers to it).  Failures only leak. */
static void undo_prepare(struct qcow2_state *s, struct qcow2_txn *t)
{
    cleanup_step(s, t, undo_step_free(s, t), undo_step_free, "freeing the new tables");
    cleanup_step(s, t, undo_step_lower(s, t), undo_step_lower, "lowering the raised refcounts");
    cleanup_step(s, t, undo_step_copied(s, t), undo_step_copied, "restoring COPIED flags");
}

static int busy(struct qcow2_state *s, struct error **errp)
{
    return qcow2_check_writable(s, errp);
}

static int txn_fail(struct qcow2_state *s, struct qcow2_txn *t, struct error **errp)
{
    error_prepend(errp, "node '%s': %s", s->node->name, t->what);
    undo_prepare(s, t);
    txn_free(t);
    return -1;
}

/* Write an L1 table to new clusters, recorded for undo. */
static int write_new_l1(struct qcow2_state *s, struct qcow2_txn *t, const uint64_t *l1,
                        uint32_t size, uint64_t *off, struct error **errp)
{
    uint64_t bytes = qcow2_align_up(s, (uint64_t)size * 8);
    *off = 0;
    if (!bytes) {
        return 0;
    }
    if (qcow2_alloc_clusters(s, bytes >> s->cluster_bits, off, errp) < 0) {
        return -1;
    }
    add_run(t->new_runs, &t->n_new_runs, *off, bytes >> s->cluster_bits);
    return qcow2_write_table(s, *off, l1, size, bytes, errp);
}

/* Serialize t->new's snapshot table to new clusters, recorded for undo. */
static int write_new_table(struct qcow2_state *s, struct qcow2_txn *t, struct error **errp)
{
    struct qcow2_view *v = &t->new;
    uint64_t size = 0;
    for (uint32_t i = 0; i < v->nb_snapshots; i++) {
        size += entry_size(&v->snaps[i]);
    }
    if (size > QCOW2_MAX_SNAPTABLE) {
        error_setg(errp, "the snapshot table would exceed %u MiB", QCOW2_MAX_SNAPTABLE >> 20);
        return -1;
    }
    v->snapshots_offset = 0;
    v->snapshots_size = size;
    if (!v->nb_snapshots) {
        return 0;
    }
    uint64_t clusters = qcow2_clusters(s, size);
    uint8_t *buf = calloc(1, clusters << s->cluster_bits);
    if (!buf) {
        abort();
    }
    uint64_t p = 0;
    for (uint32_t i = 0; i < v->nb_snapshots; i++) {
        serialize(&v->snaps[i], buf + p);
        p += entry_size(&v->snaps[i]);
    }
    int rc = qcow2_alloc_clusters(s, clusters, &v->snapshots_offset, errp);
    if (rc == 0) {
        add_run(t->new_runs, &t->n_new_runs, v->snapshots_offset, clusters);
        rc = qcow2_file_pwrite(s, v->snapshots_offset, buf, clusters << s->cluster_bits, errp);
    }
    free(buf);
    return rc;
}

/* The old snapshot table is dropped by finish once the new one is live. */
static void drop_old_table(struct qcow2_state *s, struct qcow2_txn *t)
{
    add_run(t->old_runs, &t->n_old_runs, t->old.snapshots_offset,
            qcow2_clusters(s, t->old.snapshots_size));
}

static void drop_old_l1(struct qcow2_state *s, struct qcow2_txn *t)
{
    add_run(t->old_runs, &t->n_old_runs, t->old.l1_offset,
            qcow2_clusters(s, (uint64_t)t->old.l1_size * 8));
}

/* The end of every prepare: flushed, so that commit's write is the only one left. */
static int txn_prepared(struct qcow2_state *s, struct qcow2_txn *t, void **out, struct error **errp)
{
    if (qcow2_barrier(s, errp) < 0) {
        return txn_fail(s, t, errp);
    }
    t->state = TXN_PREPARED;
    s->txn = t;
    *out = t;
    return 0;
}

int qcow2_txn_commit(struct block_node *node, void *txn, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_txn *t = txn;
    if (t->state != TXN_PREPARED) {
        error_setg(errp, "node '%s': %s: already committed", node->name, t->what);
        return -1;
    }
    /* Everything the new view references is on disk (prepare ended with a
     * flush, and nothing has been written since: the node refuses writes). */
    /* COMMIT POINT: this one 36-byte write in sector 0 switches the active
     * L1 and the snapshot table together.  Before it a re-open sees the old
     * state; after it, the new one. */
    if (write_view(s, &t->new, errp) < 0) {
        /* The write may or may not have reached the file: abort settles it. */
        t->state = TXN_UNKNOWN;
        error_prepend(errp, "node '%s': %s", node->name, t->what);
        return -1;
    }
    t->state = TXN_COMMITTED;
    struct qcow2_view keep = t->new;
    /* s takes the new tables; t->new keeps its own copy for abort/read-back. */
    t->new.l1 = dup_l1(keep.l1, keep.l1_size, 0);
    t->new.snaps = dup_snapshots(keep.snaps, keep.nb_snapshots, 0);
    install_view(s, &keep);
    return 0;
}

int qcow2_txn_abort(struct block_node *node, void *txn, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_txn *t = txn;
    s->txn = NULL;
    if (t->state != TXN_PREPARED) {
        /* The header may select the new view: write the old one back.  Its
         * tables are intact (finish has not run), so this restores it. */
        struct error *err = NULL;
        int rc = write_view(s, &t->old, &err);
        bool wrote = rc == 0;
        if (rc == 0) {
            rc = qcow2_barrier(s, &err);
        }
        if (rc < 0) {
            /* What does the file say now?  A write that returned an error did
             * not reach the page cache, so what reads back is what a re-open
             * sees.  After a failed flush the disk may still hold either
             * header: then nothing is freed (at worst leaks). */
            int which = read_back_view(s, t);
            if (which == 0 && wrote) {
                if (t->state == TXN_COMMITTED) {
                    install_view(s, &t->old);
                }
                error_propagate(errp, err);
                error_prepend(errp, "node '%s': %s: undoing it failed", node->name, t->what);
                error_prepend(errp, "the image keeps the old state (with leaked clusters)");
                txn_free(t);
                return -1;
            }
            if (which == 0) {
                log_warn("node '%s': %s: rewriting the old header failed (%s), but the image "
                         "reads the old state: undone",
                         node->name, t->what, err->message);
                error_free(err);
            } else {
                error_propagate(errp, err);
                error_prepend(errp, "node '%s': %s: undoing it failed", node->name, t->what);
                if (which == 1) {
                    /* Match what a re-open would see; free nothing (both states
                     * keep every reference they need: at worst leaks). */
                    if (t->state == TXN_UNKNOWN) {
                        install_view(s, &t->new);
                    }
                    error_prepend(errp, "the image keeps the new state (with leaked clusters)");
                } else {
                    s->broken = true;
                    error_prepend(errp, "metadata state unknown; the node refuses writes until "
                                        "the image is reopened");
                }
                txn_free(t);
                return -1;
            }
        }
        if (t->state == TXN_COMMITTED) {
            install_view(s, &t->old);
        }
    }
    undo_prepare(s, t);
    txn_free(t);
    return 0;
}

/* A cleanup step that failed once is tried once more (a one-off I/O error), then logged. */
static void cleanup_step(struct qcow2_state *s, struct qcow2_txn *t, int rc1,
                         int (*again)(struct qcow2_state *, struct qcow2_txn *), const char *what)
{
    if (rc1 == 0) {
        return;
    }
    if (again(s, t) < 0) {
        log_warn("node '%s': %s: %s failed (clusters leaked; the next writable open "
                 "reclaims them)",
                 s->node->name, t->what, what);
    }
}

static int step_drop(struct qcow2_state *s, struct qcow2_txn *t)
{
    return t->drop_l1 ? qcow2_update_l1_refcounts(s, t->drop_l1, t->drop_from, t->drop_to, -1, NULL)
                      : 0;
}

static int step_free(struct qcow2_state *s, struct qcow2_txn *t)
{
    return free_runs(s, t->old_runs, t->n_old_runs);
}

static int step_copied(struct qcow2_state *s, struct qcow2_txn *t)
{
    /* A COPIED flag may name a cluster only once its refcount of 1 is on
     * disk: otherwise a power cut leaves the flag with the old refcount (2). */
    if (!t->fix_copied_after) {
        return 0;
    }
    return qcow2_barrier(s, NULL) < 0 ? -1 : qcow2_fix_copied(s, NULL);
}

void qcow2_txn_finish(struct block_node *node, void *txn)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_txn *t = txn;
    s->txn = NULL;
    if (t->state != TXN_COMMITTED) {
        log_warn("node '%s': %s: finish without a commit (undone instead)", node->name, t->what);
        qcow2_txn_abort(node, t, NULL);
        return;
    }
    /* Cleanup: the commit must be durable before the old state's clusters
     * can be reused, or a power loss could bring back a header that points
     * at them.  If that flush fails, keep them all (a leak). */
    if (qcow2_barrier(s, NULL) < 0 && qcow2_barrier(s, NULL) < 0) {
        log_warn("node '%s': %s: flush after the commit failed; the old tables are kept "
                 "(leaked clusters, reclaimed by the next writable open)",
                 node->name, t->what);
        txn_free(t);
        return;
    }
    /* A failed refcount walk is undone whole (qcow2_update_l1_refcounts),
     * so trying it again cannot drop anything twice. */
    cleanup_step(s, t, step_drop(s, t), step_drop, "dropping the old references");
    cleanup_step(s, t, step_free(s, t), step_free, "freeing the old tables");
    cleanup_step(s, t, step_copied(s, t), step_copied, "updating COPIED flags");
    txn_free(t);
}

/* ---- create ---- */

/*
 * Create, prepare: (1) a copy of the whole active L1 (guest part and the
 * vmstate) for the snapshot, in new clusters; (2) the refcounts of what the
 * guest part reaches raised by one (the vmstate's references move from the
 * active L1 to the snapshot's, so they stay); (3) COPIED flags cleared where
 * the clusters are now shared; (4) a new active L1 without the vmstate, and
 * (5) the snapshot table with the new entry, both in new clusters; flush.
 * Commit switches the active L1 and the snapshot table in one write.
 * Finish frees the old active L1 and the old table.
 */
static int create_prepare(struct block_node *node, struct block_snapshot_info *info,
                          const char *replace_id, void **out, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (busy(s, errp) < 0) {
        return -1;
    }
    struct qcow2_snapshot *old = NULL;
    if (replace_id) {
        for (uint32_t i = 0; i < s->nb_snapshots && !old; i++) {
            old = !strcmp(s->snaps[i].id, replace_id) ? &s->snaps[i] : NULL;
        }
        if (!old) {
            error_setg(errp, "node '%s' has no snapshot with id '%s'", node->name, replace_id);
            return -1;
        }
    }
    if (check_new_snapshot(s, info, old, errp) < 0 || qcow2_flush_deferred(s, errp) < 0) {
        return -1;
    }
    /* The replaced snapshot's L1, checked now: finish drops what it reaches. */
    uint64_t *old_l1 = old ? qcow2_read_snapshot_l1(s, old, errp) : NULL;
    if (old && !old_l1) {
        error_prepend(errp, "node '%s'", node->name);
        return -1;
    }
    uint32_t old_idx = old ? (uint32_t)(old - s->snaps) : 0, old_l1_size = old ? old->l1_size : 0;
    uint64_t old_l1_off = old ? old->l1_offset : 0;
    /* A disk-only snapshot keeps no vmstate: free any stray one first. */
    if (info->vm_state_size == 0 && qcow2_vmstate_discard(node, errp) < 0) {
        free(old_l1);
        return -1;
    }
    struct qcow2_txn *t = txn_new(s, "creating snapshot '%s'", info->name);
    t->drop_l1 = old_l1; /* finish drops the replaced snapshot's references */
    t->drop_from = 0;
    t->drop_to = old_l1_size;
    uint32_t size = s->l1_size, nguest = qcow2_guest_l1_entries(s, size);
    uint64_t *snl1 = dup_l1(s->l1, size, 0), snl1_off;
    for (uint32_t i = 0; i < size; i++) {
        snl1[i] &= L1E_OFFSET_MASK; /* COPIED means nothing in an inactive table */
    }
    int rc = write_new_l1(s, t, snl1, size, &snl1_off, errp);
    free(snl1);
    if (rc < 0) {
        return txn_fail(s, t, errp);
    }
    if (qcow2_update_l1_refcounts(s, s->l1, 0, nguest, 1, errp) < 0) {
        return txn_fail(s, t, errp);
    }
    t->raised_l1 = dup_l1(s->l1, size, 0);
    t->raised_to = nguest;
    /* The raised refcounts must be on disk before any flag says "shared". */
    uint64_t *nl1 = dup_l1(s->l1, size, qcow2_align_up(s, (uint64_t)size * 8) / 8);
    memset(nl1 + nguest, 0, (size_t)(size - nguest) * 8);
    t->new.l1 = nl1;
    t->new.l1_size = size;
    bool changed;
    if (qcow2_barrier(s, errp) < 0 || qcow2_fix_copied_table(s, nl1, nguest, &changed, errp) < 0 ||
        write_new_l1(s, t, nl1, size, &t->new.l1_offset, errp) < 0) {
        return txn_fail(s, t, errp);
    }
    t->new.snaps = dup_snapshots(s->snaps, s->nb_snapshots, 1);
    t->new.nb_snapshots = s->nb_snapshots;
    if (replace_id) {
        /* One table without the old snapshot and with the new one: the same
         * commit write replaces it, so no instant has neither. */
        free_snapshot_fields(&t->new.snaps[old_idx]);
        memmove(t->new.snaps + old_idx, t->new.snaps + old_idx + 1,
                (s->nb_snapshots - old_idx - 1) * sizeof(*t->new.snaps));
        t->new.nb_snapshots--;
        add_run(t->old_runs, &t->n_old_runs, old_l1_off,
                qcow2_clusters(s, (uint64_t)old_l1_size * 8));
        t->fix_copied_after = true;
    }
    fill_new_snapshot(s, info, snl1_off, &t->new.snaps[t->new.nb_snapshots++]);
    if (write_new_table(s, t, errp) < 0) {
        return txn_fail(s, t, errp);
    }
    drop_old_l1(s, t);
    drop_old_table(s, t);
    return txn_prepared(s, t, out, errp);
}

int qcow2_snapshot_create_prepare(struct block_node *node, struct block_snapshot_info *info,
                                  void **out, struct error **errp)
{
    return create_prepare(node, info, NULL, out, errp);
}

int qcow2_snapshot_replace_prepare(struct block_node *node, const char *old_id,
                                   struct block_snapshot_info *info, void **out,
                                   struct error **errp)
{
    return create_prepare(node, info, old_id, out, errp);
}

/* ---- goto ---- */

/*
 * Is the active guest disk still the snapshot's (its L1 names the very same
 * L2 tables)?  Then nothing was written since a goto to it or its creation:
 * those tables are shared with the snapshot (refcount 2 or more, no COPIED
 * flag), so a guest write would have copied one to a new cluster or filled
 * an empty L1 entry -- either way changing the active L1.  A goto would
 * then change nothing on disk, and costs three flushes: skip it.
 */
static bool guest_l1_at(const struct qcow2_state *s, const uint64_t *snl1, uint32_t nguest)
{
    if (nguest != qcow2_guest_l1_entries(s, s->l1_size)) {
        return false;
    }
    for (uint32_t i = 0; i < nguest; i++) {
        if ((s->l1[i] & L1E_OFFSET_MASK) != (snl1[i] & L1E_OFFSET_MASK)) {
            return false;
        }
    }
    return true;
}

/*
 * Goto, prepare: (1) a new active L1 from the snapshot's guest part (the
 * active vmstate area kept as it is) and the refcounts it reaches raised;
 * flush; (2) COPIED flags cleared in its (shared) L2 tables; (3) written to
 * new clusters; flush.  Commit switches the header's active L1.  Finish
 * lowers the refcounts of the old active L1's guest part and frees it.
 */
int qcow2_snapshot_goto_prepare(struct block_node *node, const char *name_or_id, void **out,
                                struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (busy(s, errp) < 0) {
        return -1;
    }
    struct qcow2_snapshot *sn = qcow2_snapshot_lookup(s, name_or_id, errp);
    if (!sn || qcow2_flush_deferred(s, errp) < 0) {
        return -1;
    }
    if (sn->disk_size != s->size) {
        error_setg(errp, "node '%s': snapshot '%s' has a different disk size (%llu, now %llu)",
                   node->name, sn->name, (unsigned long long)sn->disk_size,
                   (unsigned long long)s->size);
        return -1;
    }
    uint64_t *snl1 = qcow2_read_snapshot_l1(s, sn, errp);
    if (!snl1) {
        error_prepend(errp, "node '%s'", node->name);
        return -1;
    }
    uint32_t size = s->l1_size, nguest = qcow2_guest_l1_entries(s, sn->l1_size);
    if (guest_l1_at(s, snl1, nguest)) {
        free(snl1);
        *out = NULL;
        return 0;
    }
    struct qcow2_txn *t = txn_new(s, "going to snapshot '%s'", name_or_id);
    uint64_t *nl1 = calloc(qcow2_align_up(s, (uint64_t)size * 8) / 8 + 1, sizeof(uint64_t));
    if (!nl1) {
        abort();
    }
    memcpy(nl1, snl1, (size_t)nguest * 8);
    /* The active vmstate area is not the guest disk: it stays (the area of
     * incremental saves shares the last snapshot's RAM, see save.c). */
    uint32_t aguest = qcow2_guest_l1_entries(s, size);
    memcpy(nl1 + aguest, s->l1 + aguest, (size_t)(size - aguest) * 8);
    free(snl1);
    t->new.l1 = nl1;
    t->new.l1_size = size;
    t->new.snaps = dup_snapshots(s->snaps, s->nb_snapshots, 0);
    t->new.nb_snapshots = s->nb_snapshots;
    t->new.snapshots_offset = s->snapshots_offset;
    t->new.snapshots_size = s->snapshots_size;
    if (qcow2_update_l1_refcounts(s, nl1, 0, nguest, 1, errp) < 0) {
        return txn_fail(s, t, errp);
    }
    t->raised_l1 = dup_l1(nl1, nguest, 0);
    t->raised_to = nguest;
    bool changed;
    if (qcow2_barrier(s, errp) < 0 || qcow2_fix_copied_table(s, nl1, size, &changed, errp) < 0 ||
        write_new_l1(s, t, nl1, size, &t->new.l1_offset, errp) < 0) {
        return txn_fail(s, t, errp);
    }
    t->drop_l1 = dup_l1(s->l1, s->l1_size, 0);
    t->drop_from = 0;
    t->drop_to = aguest;
    drop_old_l1(s, t);
    return txn_prepared(s, t, out, errp);
}

/* ---- delete ---- */

/*
 * Delete, prepare: the snapshot table without the entry, in new clusters;
 * flush.  Commit switches the header's snapshot table.  Finish lowers the
 * refcounts of what the snapshot's L1 reaches, frees that L1 and the old
 * table, and re-establishes COPIED flags on active clusters now unshared.
 */
int qcow2_snapshot_delete_prepare(struct block_node *node, const char *name_or_id, void **out,
                                  struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (busy(s, errp) < 0) {
        return -1;
    }
    struct qcow2_snapshot *sn = qcow2_snapshot_lookup(s, name_or_id, errp);
    if (!sn || qcow2_flush_deferred(s, errp) < 0) {
        return -1;
    }
    uint32_t idx = (uint32_t)(sn - s->snaps);
    uint64_t *snl1 = qcow2_read_snapshot_l1(s, sn, errp);
    if (!snl1) {
        error_prepend(errp, "node '%s'", node->name);
        return -1;
    }
    struct qcow2_txn *t = txn_new(s, "deleting snapshot '%s'", name_or_id);
    t->new.l1 = dup_l1(s->l1, s->l1_size, 0);
    t->new.l1_size = s->l1_size;
    t->new.l1_offset = s->l1_offset;
    t->new.snaps = dup_snapshots(s->snaps, s->nb_snapshots, 0);
    free_snapshot_fields(&t->new.snaps[idx]);
    memmove(t->new.snaps + idx, t->new.snaps + idx + 1,
            (s->nb_snapshots - idx - 1) * sizeof(*t->new.snaps));
    t->new.nb_snapshots = s->nb_snapshots - 1;
    if (write_new_table(s, t, errp) < 0) {
        free(snl1);
        return txn_fail(s, t, errp);
    }
    t->drop_l1 = snl1;
    t->drop_from = 0;
    t->drop_to = sn->l1_size;
    add_run(t->old_runs, &t->n_old_runs, sn->l1_offset,
            qcow2_clusters(s, (uint64_t)sn->l1_size * 8));
    drop_old_table(s, t);
    t->fix_copied_after = true;
    return txn_prepared(s, t, out, errp);
}

/* ---- vmstate discard ---- */

/*
 * Discard, prepare: a new active L1 without the vmstate entries, in new
 * clusters; flush.  Commit switches the header's active L1.  Finish lowers
 * the refcounts of the vmstate and frees the old L1.  Returns 0 with *out
 * NULL if there is no vmstate.
 */
int qcow2_vmstate_discard_prepare(struct qcow2_state *s, void **out, struct error **errp)
{
    *out = NULL;
    if (busy(s, errp) < 0 || qcow2_flush_deferred(s, errp) < 0) {
        return -1;
    }
    uint32_t from = qcow2_guest_l1_entries(s, s->l1_size);
    bool any = false;
    for (uint32_t i = from; i < s->l1_size; i++) {
        any |= (s->l1[i] & L1E_OFFSET_MASK) != 0;
    }
    if (!any) {
        return 0;
    }
    struct qcow2_txn *t = txn_new(s, "discarding the vmstate%s", "");
    uint32_t size = s->l1_size;
    t->new.l1 = dup_l1(s->l1, size, qcow2_align_up(s, (uint64_t)size * 8) / 8);
    memset(t->new.l1 + from, 0, (size_t)(size - from) * 8);
    t->new.l1_size = size;
    t->new.snaps = dup_snapshots(s->snaps, s->nb_snapshots, 0);
    t->new.nb_snapshots = s->nb_snapshots;
    t->new.snapshots_offset = s->snapshots_offset;
    t->new.snapshots_size = s->snapshots_size;
    if (write_new_l1(s, t, t->new.l1, size, &t->new.l1_offset, errp) < 0) {
        return txn_fail(s, t, errp);
    }
    t->drop_l1 = dup_l1(s->l1, size, 0);
    t->drop_from = from;
    t->drop_to = size;
    drop_old_l1(s, t);
    return txn_prepared(s, t, out, errp);
}

/* ---- one-node operations: prepare, commit, finish ---- */

static int run_txn(struct block_node *node, int prepared, void **tp, struct error **errp)
{
    void *t = *tp;
    if (prepared < 0) {
        return -1;
    }
    if (!t) {
        return 0;
    }
    if (qcow2_txn_commit(node, t, errp) < 0) {
        qcow2_txn_abort(node, t, NULL);
        return -1;
    }
    qcow2_txn_finish(node, t);
    return 0;
}

int qcow2_snapshot_create(struct block_node *node, struct block_snapshot_info *info,
                          struct error **errp)
{
    void *t = NULL;
    return run_txn(node, qcow2_snapshot_create_prepare(node, info, &t, errp), &t, errp);
}

int qcow2_snapshot_goto(struct block_node *node, const char *name_or_id, struct error **errp)
{
    void *t = NULL;
    return run_txn(node, qcow2_snapshot_goto_prepare(node, name_or_id, &t, errp), &t, errp);
}

int qcow2_snapshot_delete(struct block_node *node, const char *name_or_id, struct error **errp)
{
    void *t = NULL;
    return run_txn(node, qcow2_snapshot_delete_prepare(node, name_or_id, &t, errp), &t, errp);
}

int qcow2_vmstate_discard(struct block_node *node, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    void *t = NULL;
    return run_txn(node, qcow2_vmstate_discard_prepare(s, &t, errp), &t, errp);
}
