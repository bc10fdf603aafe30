/*
 * qcow2 refcounts: the two-level refcount structure (table -> blocks of
 * 1..64-bit entries), cluster allocation that reuses freed clusters, and
 * growth of the refcount table.
 *
 * Ordering: a refcount is raised before anything points at the cluster and
 * lowered only after nothing does, so a crash can only leave a refcount too
 * high (a leak), never too low.  A new refcount block is written before the
 * table entry that points to it; a new refcount table is written (with the
 * blocks that cover it) before the header points to it.
 */
#include "block/qcow2.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rb_get(const struct qcow2_state *s, const uint8_t *blk, uint64_t i)
{
    uint32_t bits = 1u << s->refcount_order;
    if (bits < 8) {
        uint64_t bit = i * bits;
        return (blk[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    const uint8_t *p = blk + i * (bits / 8);
    uint64_t v = 0;
    for (uint32_t b = 0; b < bits / 8; b++) {
        v = (v << 8) | p[b];
    }
    return v;
}

/* Set entry i; returns the byte range of blk that changed. */
static void rb_set(const struct qcow2_state *s, uint8_t *blk, uint64_t i, uint64_t v,
                   uint64_t *byte_off, uint32_t *byte_len)
{
    uint32_t bits = 1u << s->refcount_order;
    if (bits < 8) {
        uint64_t bit = i * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << (bit % 8));
        blk[bit / 8] = (uint8_t)((blk[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
        *byte_off = bit / 8;
        *byte_len = 1;
        return;
    }
    uint8_t *p = blk + i * (bits / 8);
    for (int b = (int)(bits / 8) - 1; b >= 0; b--) {
        p[b] = (uint8_t)v;
        v >>= 8;
    }
    *byte_off = i * (bits / 8);
    *byte_len = bits / 8;
}

int qcow2_refcount_init(struct qcow2_state *s, struct error **errp)
{
    s->rb_entries = (s->cluster_size * 8) >> s->refcount_order;
    s->refcount_max = s->refcount_order == 6 ? UINT64_MAX : (1ull << (1u << s->refcount_order)) - 1;
    s->reftable_entries = (uint64_t)s->reftable_clusters * s->cluster_size / 8;
    s->reftable = calloc(s->reftable_entries, sizeof(uint64_t));
    if (!s->reftable) {
        abort();
    }
    if (qcow2_read_table(s, s->reftable_offset, s->reftable, s->reftable_entries, errp) < 0) {
        error_prepend(errp, "reading the refcount table");
        return -1;
    }
    uint64_t fsize = file_node_size(s->file);
    for (uint64_t i = 0; i < s->reftable_entries; i++) {
        uint64_t off = s->reftable[i] & REFT_OFFSET_MASK;
        if ((off & (s->cluster_size - 1)) || (off && off + s->cluster_size > fsize)) {
            error_setg(errp, "refcount block %llu at %#llx is out of range of the file",
                       (unsigned long long)i, (unsigned long long)off);
            return -1;
        }
        s->reftable[i] = off;
    }
    return 0;
}

bool qcow2_overlaps_metadata(struct qcow2_state *s, uint64_t off, uint64_t clusters)
{
    return qcow2_metadata_at(s, off, clusters << s->cluster_bits) != NULL;
}

int qcow2_get_refcount(struct qcow2_state *s, uint64_t cluster_index, uint64_t *rc,
                       struct error **errp)
{
    uint64_t ti = cluster_index / s->rb_entries;
    if (ti >= s->reftable_entries || !s->reftable[ti]) {
        *rc = 0;
        return 0;
    }
    uint8_t *blk;
    if (qcow2_cache_get(s, &s->rb_cache, s->reftable[ti], &blk, errp) < 0) {
        return -1;
    }
    *rc = rb_get(s, blk, cluster_index % s->rb_entries);
    qcow2_cache_put(&s->rb_cache, blk);
    return 0;
}

/*
 * Grow the refcount table so that it has an entry `min_idx`.  The new table
 * and the refcount blocks that cover it go at the first cluster that the old
 * table cannot describe (all such clusters are free by definition).
 */
static int grow_reftable(struct qcow2_state *s, uint64_t min_idx, struct error **errp)
{
    uint64_t old = s->reftable_entries;
    uint64_t want = min_idx + 1 > old * 2 ? min_idx + 1 : old * 2;
    uint64_t t0 = old * s->rb_entries; /* first uncovered cluster */
    uint64_t k, tc;
    for (;;) {
        tc = qcow2_clusters(s, want * 8);
        for (k = 1; k * s->rb_entries < k + tc; k++) {
        }
        if (old + k <= want) {
            break;
        }
        want = old + k;
    }
    if (tc * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES) {
        error_setg(errp, "the refcount table would exceed %u MiB (image too large)",
                   QCOW2_MAX_REFTABLE_BYTES >> 20);
        return -1;
    }
    uint64_t *nt = calloc(tc * s->cluster_size / 8, sizeof(uint64_t));
    uint8_t *blk = calloc(1, s->cluster_size);
    if (!nt || !blk) {
        abort();
    }
    memcpy(nt, s->reftable, old * 8);
    int rc = -1;
    /* New blocks at t0 .. t0+k-1, then the table; each block counts the
     * clusters of this new area that fall in its range. */
    for (uint64_t j = 0; j < k; j++) {
        memset(blk, 0, s->cluster_size);
        uint64_t first = (old + j) * s->rb_entries;
        for (uint64_t c = t0; c < t0 + k + tc; c++) {
            if (c >= first && c < first + s->rb_entries) {
                uint64_t bo;
                uint32_t bl;
                rb_set(s, blk, c - first, 1, &bo, &bl);
            }
        }
        uint64_t off = (t0 + j) << s->cluster_bits;
        if (qcow2_file_pwrite(s, off, blk, s->cluster_size, errp) < 0) {
            goto out;
        }
        nt[old + j] = off;
    }
    uint64_t toff = (t0 + k) << s->cluster_bits;
    if (qcow2_write_table(s, toff, nt, tc * s->cluster_size / 8, tc * s->cluster_size, errp) < 0 ||
        qcow2_barrier(s, errp) < 0) {
        goto out;
    }
    /* Switch: offset and cluster count are adjacent header fields, one write. */
    uint8_t hdr[12];
    be64_put(hdr, toff);
    be32_put(hdr + 8, (uint32_t)tc);
    if (qcow2_write_header_field(s, QCOW2_HDR_REFTABLE, hdr, sizeof(hdr), errp) < 0 ||
        qcow2_barrier(s, errp) < 0) {
        goto out;
    }
    uint64_t old_off = s->reftable_offset, old_clusters = s->reftable_clusters;
    free(s->reftable);
    s->reftable = nt;
    nt = NULL;
    s->reftable_entries = tc * s->cluster_size / 8;
    s->reftable_offset = toff;
    s->reftable_clusters = (uint32_t)tc;
    qcow2_meta_changed(s);
    /* Only now is the old table unreferenced. */
    rc = qcow2_free_clusters(s, old_off, old_clusters, errp);
out:
    free(nt);
    free(blk);
    return rc;
}

/* Make sure the refcount block for table index ti exists. */
static int ensure_refblock(struct qcow2_state *s, uint64_t ti, struct error **errp)
{
    if (ti >= s->reftable_entries && grow_reftable(s, ti, errp) < 0) {
        return -1;
    }
    if (s->reftable[ti]) {
        return 0;
    }
    /* No block means every cluster of its range is free: put the block in
     * the first cluster of its own range and count it there. */
    uint64_t off = (ti * s->rb_entries) << s->cluster_bits;
    if (qcow2_overlaps_metadata(s, off, 1)) {
        error_setg(errp,
                   "node '%s': refcount block %llu is missing but its clusters hold %s "
                   "(image corrupt; repair it with 'qemu-img check -r all')",
                   s->node->name, (unsigned long long)ti,
                   qcow2_metadata_at(s, off, s->cluster_size));
        qcow2_mark_corrupt(s);
        return -1;
    }
    uint8_t *blk = qcow2_cache_get_empty(s, &s->rb_cache, off);
    uint64_t bo;
    uint32_t bl;
    rb_set(s, blk, 0, 1, &bo, &bl);
    int rc = qcow2_file_pwrite(s, off, blk, s->cluster_size, errp);
    qcow2_cache_put(&s->rb_cache, blk);
    if (rc < 0 || qcow2_barrier(s, errp) < 0) {
        qcow2_cache_forget(&s->rb_cache, off);
        return -1;
    }
    uint8_t be[8];
    be64_put(be, off);
    if (qcow2_file_pwrite(s, s->reftable_offset + ti * 8, be, 8, errp) < 0) {
        qcow2_cache_forget(&s->rb_cache, off);
        return -1;
    }
    s->reftable[ti] = off;
    s->unflushed_refcounts = true;
    qcow2_meta_changed(s);
    return 0;
}

int qcow2_update_refcount(struct qcow2_state *s, uint64_t host_offset, int64_t delta,
                          struct error **errp)
{
    uint64_t ci = host_offset >> s->cluster_bits;
    uint64_t ti = ci / s->rb_entries;
    if (delta > 0 && ensure_refblock(s, ti, errp) < 0) {
        return -1;
    }
    if (ti >= s->reftable_entries || !s->reftable[ti]) {
        error_setg(errp,
                   "node '%s': the refcount of cluster %#llx would drop below zero (image "
                   "corrupt; repair it with 'qemu-img check -r all')",
                   s->node->name, (unsigned long long)host_offset);
        qcow2_mark_corrupt(s);
        return -1;
    }
    uint8_t *blk;
    if (qcow2_cache_get(s, &s->rb_cache, s->reftable[ti], &blk, errp) < 0) {
        return -1;
    }
    uint64_t i = ci % s->rb_entries;
    uint64_t old = rb_get(s, blk, i), nv = old + (uint64_t)delta;
    int rc = 0;
    if (delta < 0 && old < (uint64_t)-delta) {
        error_setg(errp,
                   "node '%s': the refcount of cluster %#llx would drop below zero (image "
                   "corrupt; repair it with 'qemu-img check -r all')",
                   s->node->name, (unsigned long long)host_offset);
        qcow2_mark_corrupt(s);
        rc = -1;
    } else if (delta > 0 && (old > s->refcount_max - (uint64_t)delta)) {
        error_setg(errp,
                   "refcount of cluster %#llx would exceed the maximum of %llu "
                   "(refcount_bits=%u is too narrow for this many references)",
                   (unsigned long long)host_offset, (unsigned long long)s->refcount_max,
                   1u << s->refcount_order);
        rc = -1;
    } else {
        uint64_t bo;
        uint32_t bl;
        rb_set(s, blk, i, nv, &bo, &bl);
        if (s->rb_batch) {
            qcow2_cache_mark_dirty(&s->rb_cache, blk, bo, bo + bl);
        } else {
            rc = qcow2_file_pwrite(s, s->reftable[ti] + bo, blk + bo, bl, errp);
            if (rc < 0) {
                rb_set(s, blk, i, old, &bo, &bl);
            }
        }
    }
    qcow2_cache_put(&s->rb_cache, blk);
    if (rc < 0) {
        return -1;
    }
    s->unflushed_refcounts = true;
    if (nv == 0) {
        qcow2_meta_changed(s); /* if it was metadata, it is not any more */
        /* The cluster may be reused for anything: drop stale cached copies. */
        qcow2_cache_forget(&s->l2_cache, ci << s->cluster_bits);
        qcow2_cache_forget(&s->rb_cache, ci << s->cluster_bits);
        if (s->dbuf_entry && ((s->dbuf_entry & s->cluster_offset_mask) >> s->cluster_bits) == ci) {
            s->dbuf_entry = 0;
        }
        if (ci < s->free_hint) {
            s->free_hint = ci;
        }
    }
    return 0;
}

int qcow2_alloc_clusters(struct qcow2_state *s, uint64_t n, uint64_t *offset, struct error **errp)
{
    for (;;) {
        /* Find n free clusters in a row, starting at the hint. */
        uint64_t start = s->free_hint, run = 0, c = start;
        while (run < n) {
            uint64_t rc;
            if (qcow2_get_refcount(s, c, &rc, errp) < 0) {
                return -1;
            }
            if (rc == 0) {
                run++;
            } else {
                if (run == 0 && c == s->free_hint) {
                    s->free_hint = c + 1;
                }
                run = 0;
                start = c + 1;
            }
            c++;
            if ((c << s->cluster_bits) >> s->cluster_bits != c || c > (1ull << 47)) {
                error_setg(errp, "no free cluster below the 56-bit offset limit");
                return -1;
            }
        }
        /* Their refcount blocks must exist before we count them; creating one
         * uses a cluster, which may be one of ours: then search again. */
        bool created = false;
        for (uint64_t ti = start / s->rb_entries; ti <= (start + n - 1) / s->rb_entries; ti++) {
            if (ti >= s->reftable_entries || !s->reftable[ti]) {
                if (ensure_refblock(s, ti, errp) < 0) {
                    return -1;
                }
                created = true;
            }
        }
        if (created) {
            continue;
        }
        /* Refcount 0 on the header or a table we use means a corrupt image:
         * refuse rather than overwrite live metadata. */
        const char *what = qcow2_metadata_at(s, start << s->cluster_bits, n << s->cluster_bits);
        if (what) {
            error_setg(errp,
                       "node '%s': cluster %#llx has refcount 0 but holds %s (image corrupt; "
                       "repair it with 'qemu-img check -r all')",
                       s->node->name, (unsigned long long)(start << s->cluster_bits), what);
            qcow2_mark_corrupt(s);
            return -1;
        }
        for (uint64_t i = 0; i < n; i++) {
            if (qcow2_update_refcount(s, (start + i) << s->cluster_bits, 1, errp) < 0) {
                /* Give back the ones already counted: a failed allocation
                 * allocates nothing (else a one-off I/O error leaks them). */
                while (i-- > 0) {
                    qcow2_update_refcount(s, (start + i) << s->cluster_bits, -1, NULL);
                }
                return -1;
            }
        }
        if (start == s->free_hint) {
            s->free_hint = start + n;
        }
        *offset = start << s->cluster_bits;
        return 0;
    }
}

int qcow2_free_clusters(struct qcow2_state *s, uint64_t offset, uint64_t n, struct error **errp)
{
    for (uint64_t i = 0; i < n; i++) {
        if (qcow2_update_refcount(s, offset + (i << s->cluster_bits), -1, errp) < 0) {
            return -1;
        }
    }
    return 0;
}

int qcow2_update_entry_refcount(struct qcow2_state *s, uint64_t l2_entry, int64_t delta,
                                struct error **errp)
{
    switch (qcow2_entry_type(s, l2_entry)) {
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        if (qcow2_check_host_range(s, l2_entry & L2E_OFFSET_MASK, s->cluster_size, "a data cluster",
                                   errp) < 0) {
            return -1;
        }
        return qcow2_update_refcount(s, l2_entry & L2E_OFFSET_MASK, delta, errp);
    case QCOW2_CLUSTER_COMPRESSED: {
        /* Every cluster touched by the compressed sectors holds a reference. */
        uint64_t off = l2_entry & s->cluster_offset_mask;
        uint64_t nsec = ((l2_entry >> s->csize_shift) & s->csize_mask) + 1;
        uint64_t first = (off & ~511ull) >> s->cluster_bits;
        uint64_t last = ((off & ~511ull) + nsec * 512 - 1) >> s->cluster_bits;
        if (qcow2_check_host_range(s, off, 1, "a compressed cluster", errp) < 0) {
            return -1;
        }
        for (uint64_t c = first; c <= last; c++) {
            if (qcow2_update_refcount(s, c << s->cluster_bits, delta, errp) < 0) {
                return -1;
            }
        }
        return 0;
    }
    default:
        return 0;
    }
}

/*
 * Walk l1[from..to) adding delta to each L2 table and each cluster its
 * entries reference.  `limit` stops after that many updates (used to undo a
 * partial walk); returns the number of updates done, or -1.
 */
static int64_t walk_l1(struct qcow2_state *s, const uint64_t *l1, uint32_t from, uint32_t to,
                       int64_t delta, int64_t limit, struct error **errp)
{
    int64_t done = 0;
    for (uint32_t i = from; i < to && done != limit; i++) {
        uint64_t l2off = l1[i] & L1E_OFFSET_MASK;
        if (!l2off) {
            continue;
        }
        if (qcow2_check_host_range(s, l2off, s->cluster_size, "an L2 table", errp) < 0 ||
            qcow2_update_refcount(s, l2off, delta, errp) < 0) {
            return -1 - done;
        }
        done++;
        uint8_t *l2;
        if (qcow2_cache_get(s, &s->l2_cache, l2off, &l2, errp) < 0) {
            return -1 - done;
        }
        for (uint64_t j = 0; j < s->l2_entries && done != limit; j++) {
            uint64_t e = be64_get(l2 + j * 8);
            if (qcow2_entry_type(s, e) < QCOW2_CLUSTER_ZERO_ALLOC) {
                continue;
            }
            if (qcow2_update_entry_refcount(s, e, delta, errp) < 0) {
                qcow2_cache_put(&s->l2_cache, l2);
                return -1 - done;
            }
            done++;
        }
        qcow2_cache_put(&s->l2_cache, l2);
    }
    return done;
}

/*
 * The updates of a walk are batched: each refcount block is written once at
 * the end (a snapshot of a big disk touches thousands of refcounts, and the
 * VM may be paused meanwhile).  Callers order the walk against their
 * pointer updates exactly as for single updates: the batch is written
 * before the function returns.
 */
int qcow2_update_l1_refcounts(struct qcow2_state *s, const uint64_t *l1, uint32_t from, uint32_t to,
                              int64_t delta, struct error **errp)
{
    bool outer = !s->rb_batch;
    s->rb_batch = true;
    int64_t done = walk_l1(s, l1, from, to, delta, -1, errp);
    if (done < 0) {
        /* Undo the updates made before the failure (a compressed entry counts
         * once even if it touched several clusters: undo it only if whole). */
        int64_t made = -1 - done;
        if (made > 0) {
            walk_l1(s, l1, from, to, -delta, made, NULL);
        }
    }
    int rc = done < 0 ? -1 : 0;
    if (outer) {
        s->rb_batch = false;
        if (qcow2_cache_write_dirty(s, &s->rb_cache, rc < 0 ? NULL : errp) < 0 && rc == 0) {
            /* Some refcount blocks may be on disk with the change, others not:
             * undo the whole walk in memory, and write every block again (the
             * ones not written then simply get their old contents back). */
            rc = -1;
            s->rb_batch = true;
            walk_l1(s, l1, from, to, -delta, -1, NULL);
            s->rb_batch = false;
            qcow2_cache_write_dirty(s, &s->rb_cache, NULL);
        }
    }
    return rc;
}
