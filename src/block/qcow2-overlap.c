/*
 * qcow2 metadata overlap checks (QEMU's "Preventing invalid write on
 * metadata"): before any write to the image file, make sure it does not land
 * on metadata that it is not meant to change.  A hostile or corrupt image can
 * point an L2 entry at a refcount block, or claim in its refcounts that an
 * L2 table is free; without this check a guest write would overwrite that
 * metadata and spread the corruption.
 *
 * The metadata map (header, active L1 and its L2 tables, refcount table and
 * blocks, snapshot table, snapshot L1 tables) is a sorted array rebuilt
 * lazily from the in-memory tables after qcow2_meta_changed() (any change of
 * where metadata lives, or a cluster freed).  Inactive L2 tables (reachable
 * only from snapshots) are not in it, as in QEMU's default checks.
 *
 * Rules: a data write must touch no metadata; a metadata write must lie
 * entirely outside the map (new clusters) or entirely inside one item that
 * overlaps no other (an L2 table that is also a refcount block is refused).
 * A refused write marks the image corrupt (incompatible feature bit 1) and
 * makes the node refuse writes; QEMU and snapvm then open it read-write only
 * after 'qemu-img check -r all'.
 */
#include "block/qcow2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

enum meta_kind {
    META_HEADER,
    META_L1,
    META_L2,
    META_REFTABLE,
    META_REFBLOCK,
    META_SNAPTABLE,
    META_SNAP_L1,
};

static const char *const meta_names[] = {
        "the image header", "the active L1 table", "an active L2 table",    "the refcount table",
        "a refcount block", "the snapshot table",  "a snapshot's L1 table",
};

struct qcow2_meta_item {
    uint64_t off, len;
    uint8_t kind;
};

void qcow2_meta_changed(struct qcow2_state *s)
{
    s->meta_valid = false;
}

static void add(struct qcow2_state *s, size_t *cap, uint64_t off, uint64_t len, int kind)
{
    if (!len) {
        return;
    }
    if (s->n_meta == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        s->meta = realloc(s->meta, *cap * sizeof(*s->meta));
        if (!s->meta) {
            abort();
        }
    }
    s->meta[s->n_meta++] = (struct qcow2_meta_item){off, len, (uint8_t)kind};
}

static int cmp_item(const void *a, const void *b)
{
    const struct qcow2_meta_item *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static void rebuild(struct qcow2_state *s)
{
    size_t cap = s->meta_cap;
    s->n_meta = 0;
    add(s, &cap, 0, s->cluster_size, META_HEADER);
    add(s, &cap, s->l1_offset, (uint64_t)s->l1_size * 8, META_L1);
    for (uint32_t i = 0; i < s->l1_size; i++) {
        add(s, &cap, s->l1[i] & L1E_OFFSET_MASK, (s->l1[i] & L1E_OFFSET_MASK) ? s->cluster_size : 0,
            META_L2);
    }
    add(s, &cap, s->reftable_offset, (uint64_t)s->reftable_clusters << s->cluster_bits,
        META_REFTABLE);
    for (uint64_t i = 0; i < s->reftable_entries; i++) {
        add(s, &cap, s->reftable[i], s->reftable[i] ? s->cluster_size : 0, META_REFBLOCK);
    }
    add(s, &cap, s->snapshots_offset, s->snapshots_size, META_SNAPTABLE);
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        add(s, &cap, s->snaps[i].l1_offset, (uint64_t)s->snaps[i].l1_size * 8, META_SNAP_L1);
    }
    s->meta_cap = cap;
    qsort(s->meta, s->n_meta, sizeof(*s->meta), cmp_item);
    /* Longest item, so that a search can start far enough to the left. */
    s->meta_maxlen = 0;
    for (size_t i = 0; i < s->n_meta; i++) {
        s->meta_maxlen = s->meta[i].len > s->meta_maxlen ? s->meta[i].len : s->meta_maxlen;
    }
    s->meta_valid = true;
}

/* Items overlapping [off, off + len): their count; the first two indexes in out. */
static size_t find_overlaps(struct qcow2_state *s, uint64_t off, uint64_t len, size_t out[2])
{
    if (!s->meta_valid) {
        rebuild(s);
    }
    uint64_t from = off > s->meta_maxlen ? off - s->meta_maxlen : 0;
    size_t lo = 0, hi = s->n_meta;
    while (lo < hi) { /* first item with off >= from */
        size_t mid = (lo + hi) / 2;
        if (s->meta[mid].off < from) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    size_t n = 0;
    for (size_t i = lo; i < s->n_meta && s->meta[i].off < off + len; i++) {
        const struct qcow2_meta_item *m = &s->meta[i];
        if (m->off + m->len > off) {
            if (n < 2) {
                out[n] = i;
            }
            n++;
        }
    }
    return n;
}

const char *qcow2_metadata_at(struct qcow2_state *s, uint64_t off, uint64_t len)
{
    size_t hit[2];
    return find_overlaps(s, off, len, hit) ? meta_names[s->meta[hit[0]].kind] : NULL;
}

void qcow2_mark_corrupt(struct qcow2_state *s)
{
    if (s->node->read_only || (s->incompat & QCOW2_INCOMPAT_CORRUPT)) {
        s->broken = true;
        return;
    }
    s->incompat |= QCOW2_INCOMPAT_CORRUPT;
    s->broken = true;
    if (s->version >= 3) {
        uint8_t be[8];
        be64_put(be, s->incompat);
        if (bdrv_child_pwrite(s->file, QCOW2_HDR_INCOMPAT, be, 8, NULL) < 0 ||
            bdrv_child_flush(s->file, NULL) < 0) {
            log_warn("node '%s': could not mark the image corrupt", s->node->name);
        }
    }
    log_warn("node '%s': '%s' marked corrupt; repair it with 'qemu-img check -r all'",
             s->node->name, s->node->filename);
}

int qcow2_check_overlap(struct qcow2_state *s, uint64_t off, uint64_t len, bool data,
                        struct error **errp)
{
    if (!len) {
        return 0;
    }
    size_t hit[2];
    size_t n = find_overlaps(s, off, len, hit);
    if (n == 0) {
        return 0;
    }
    const struct qcow2_meta_item *m = &s->meta[hit[0]];
    if (!data && n == 1 && m->off <= off && off + len <= m->off + m->len) {
        return 0; /* an update inside the one table it belongs to */
    }
    if (!data && n > 1 && m->off <= off && off + len <= m->off + m->len) {
        m = &s->meta[hit[1]]; /* name the other one */
    }
    error_setg(errp,
               "node '%s': Preventing invalid write on metadata (the %s write of %llu bytes "
               "at %#llx would overwrite %s at %#llx); the image '%s' is now marked corrupt: "
               "repair it with 'qemu-img check -r all' (or open it read-only)",
               s->node->name, data ? "data" : "metadata", (unsigned long long)len,
               (unsigned long long)off, meta_names[m->kind], (unsigned long long)m->off,
               s->node->filename);
    qcow2_mark_corrupt(s);
    return -1;
}
