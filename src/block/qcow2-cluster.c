/*
 * qcow2 cluster mapping: guest (virtual) offsets to host clusters through
 * the L1 and L2 tables; reads (including compressed clusters and the
 * backing file), allocating writes with copy-on-write of clusters and L2
 * tables shared with snapshots, growth of the active L1 table, and the
 * COPIED-flag upkeep.
 *
 * Write ordering for one guest cluster: allocate (refcount 1), write the
 * whole new cluster, flush if refcount blocks changed since the last flush
 * (so the L2 entry can never point at a cluster whose refcount is not on
 * disk), then write the 8-byte L2 entry, and only then drop the reference
 * to the old cluster.  In-place writes go only to clusters whose refcount is
 * exactly 1; the decision reads the refcount itself rather than trusting
 * the COPIED flag, so a flag left stale by a crash cannot make us overwrite
 * a snapshot's data.
 */
#include "block/qcow2.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

enum qcow2_cluster_type qcow2_entry_type(const struct qcow2_state *s, uint64_t e)
{
    (void)s;
    if (e & QCOW_OFLAG_COMPRESSED) {
        return QCOW2_CLUSTER_COMPRESSED;
    }
    if (e & QCOW_OFLAG_ZERO) {
        return (e & L2E_OFFSET_MASK) ? QCOW2_CLUSTER_ZERO_ALLOC : QCOW2_CLUSTER_ZERO_PLAIN;
    }
    return (e & L2E_OFFSET_MASK) ? QCOW2_CLUSTER_NORMAL : QCOW2_CLUSTER_UNALLOCATED;
}

static int check_host_offset(struct qcow2_state *s, uint64_t e, struct error **errp)
{
    enum qcow2_cluster_type t = qcow2_entry_type(s, e);
    if ((t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC) &&
        (e & L2E_OFFSET_MASK & (s->cluster_size - 1))) {
        error_setg(errp, "node '%s': L2 entry %#llx points to an unaligned cluster (image corrupt)",
                   s->node->name, (unsigned long long)e);
        return -1;
    }
    /* An offset past the end of the file (2^40 in a hostile image) is refused,
     * never read as zeros, written in place or counted (which would grow the
     * file to that size). */
    if (t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC) {
        return qcow2_check_host_range(s, e & L2E_OFFSET_MASK, s->cluster_size, "a data cluster",
                                      errp);
    }
    if (t == QCOW2_CLUSTER_COMPRESSED) {
        return qcow2_check_host_range(s, e & s->cluster_offset_mask, 1, "a compressed cluster",
                                      errp);
    }
    return 0;
}

int qcow2_get_entry(struct qcow2_state *s, const uint64_t *l1, uint32_t l1_size, uint64_t voff,
                    uint64_t *l2_entry, struct error **errp)
{
    return qcow2_get_entries(s, l1, l1_size, voff, l2_entry, 1, errp);
}

int qcow2_get_entries(struct qcow2_state *s, const uint64_t *l1, uint32_t l1_size, uint64_t voff,
                      uint64_t *entries, size_t n, struct error **errp)
{
    uint64_t vc = voff >> s->cluster_bits;
    uint64_t l1i = vc >> s->l2_bits;
    memset(entries, 0, n * sizeof(*entries));
    if (l1i >= l1_size) {
        return 0;
    }
    uint64_t l2off = l1[l1i] & L1E_OFFSET_MASK;
    if (!l2off) {
        return 0;
    }
    if (l2off & (s->cluster_size - 1)) {
        error_setg(errp, "node '%s': L1 entry %llu points to an unaligned L2 table (image corrupt)",
                   s->node->name, (unsigned long long)l1i);
        return -1;
    }
    if (qcow2_check_host_range(s, l2off, s->cluster_size, "an L2 table", errp) < 0) {
        return -1;
    }
    uint8_t *l2;
    if (qcow2_cache_get(s, &s->l2_cache, l2off, &l2, errp) < 0) {
        return -1;
    }
    uint64_t first = vc & (s->l2_entries - 1);
    n = n < s->l2_entries - first ? n : s->l2_entries - first;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        entries[i] = be64_get(l2 + (first + i) * 8);
        rc = check_host_offset(s, entries[i], errp);
    }
    qcow2_cache_put(&s->l2_cache, l2);
    return rc;
}

static int inflate_deflate(struct qcow2_state *s, size_t in_len, struct error **errp)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, -12) != Z_OK) {
        error_setg(errp, "zlib initialisation failed");
        return -1;
    }
    z.next_in = s->cbuf;
    z.avail_in = (uInt)in_len;
    z.next_out = s->dbuf;
    z.avail_out = (uInt)s->cluster_size;
    int ret = inflate(&z, Z_FINISH);
    inflateEnd(&z);
    /* The compressed data need not end the stream exactly: a full cluster out is success. */
    if ((ret != Z_STREAM_END && ret != Z_BUF_ERROR && ret != Z_OK) || z.avail_out != 0) {
        error_setg(errp, "node '%s': the deflate-compressed cluster at %#llx is corrupt",
                   s->node->name,
                   (unsigned long long)(s->dbuf_entry_pending & s->cluster_offset_mask));
        return -1;
    }
    return 0;
}

static int inflate_zstd(struct qcow2_state *s, size_t in_len, struct error **errp)
{
    ZSTD_DStream *d = ZSTD_createDStream();
    if (!d) {
        abort();
    }
    ZSTD_inBuffer in = {s->cbuf, in_len, 0};
    ZSTD_outBuffer out = {s->dbuf, s->cluster_size, 0};
    size_t ret = 1;
    while (out.pos < out.size && in.pos < in.size) {
        ret = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(ret) || ret == 0) {
            break;
        }
    }
    ZSTD_freeDStream(d);
    if (ZSTD_isError(ret) || out.pos != out.size) {
        error_setg(errp, "node '%s': the zstd-compressed cluster at %#llx is corrupt",
                   s->node->name,
                   (unsigned long long)(s->dbuf_entry_pending & s->cluster_offset_mask));
        return -1;
    }
    return 0;
}

/* Decompress the cluster an L2 entry describes into s->dbuf. */
static int read_compressed(struct qcow2_state *s, uint64_t e, struct error **errp)
{
    if (s->dbuf_entry == e) {
        return 0;
    }
    uint64_t off = e & s->cluster_offset_mask;
    uint64_t nsec = ((e >> s->csize_shift) & s->csize_mask) + 1;
    uint64_t len = nsec * 512 - (off & 511);
    uint64_t fsize = file_node_size(s->file);
    if (off >= fsize) {
        error_setg(errp, "compressed cluster at %#llx is beyond the end of the file",
                   (unsigned long long)off);
        return -1;
    }
    if (len > fsize - off) {
        len = fsize - off;
    }
    if (qcow2_file_pread(s, off, s->cbuf, len, errp) < 0) {
        return -1;
    }
    s->dbuf_entry = 0;
    s->dbuf_entry_pending = e;
    int rc = s->compression_type == 1 ? inflate_zstd(s, len, errp) : inflate_deflate(s, len, errp);
    if (rc == 0) {
        s->dbuf_entry = e;
    }
    return rc;
}

static int read_backing(struct qcow2_state *s, uint64_t voff, uint8_t *buf, size_t n,
                        struct error **errp)
{
    memset(buf, 0, n);
    if (!s->backing) {
        return 0;
    }
    uint64_t blen = s->backing->drv->length(s->backing);
    if (voff >= blen) {
        return 0;
    }
    size_t m = voff + n > blen ? (size_t)(blen - voff) : n;
    return bdrv_child_pread(s->backing, voff, buf, m, errp);
}

/* Read n bytes (within one cluster) described by entry e. */
static int read_entry(struct qcow2_state *s, uint64_t e, uint64_t voff, uint8_t *buf, size_t n,
                      bool use_backing, struct error **errp)
{
    uint64_t in = voff & (s->cluster_size - 1);
    switch (qcow2_entry_type(s, e)) {
    case QCOW2_CLUSTER_NORMAL:
        return qcow2_file_pread(s, (e & L2E_OFFSET_MASK) + in, buf, n, errp);
    case QCOW2_CLUSTER_COMPRESSED:
        if (read_compressed(s, e, errp) < 0) {
            return -1;
        }
        memcpy(buf, s->dbuf + in, n);
        return 0;
    case QCOW2_CLUSTER_UNALLOCATED:
        if (use_backing) {
            return read_backing(s, voff, buf, n, errp);
        }
        memset(buf, 0, n);
        return 0;
    default:
        memset(buf, 0, n);
        return 0;
    }
}

int qcow2_read_l1(struct qcow2_state *s, const uint64_t *l1, uint32_t l1_size, uint64_t voff,
                  uint8_t *buf, size_t len, bool use_backing, struct error **errp)
{
    while (len > 0) {
        uint64_t in = voff & (s->cluster_size - 1);
        size_t n = s->cluster_size - in < len ? (size_t)(s->cluster_size - in) : len;
        uint64_t e;
        if (qcow2_get_entry(s, l1, l1_size, voff, &e, errp) < 0) {
            return -1;
        }
        /* Merge following clusters that are contiguous on the host. */
        if (qcow2_entry_type(s, e) == QCOW2_CLUSTER_NORMAL) {
            uint64_t host = (e & L2E_OFFSET_MASK) + in;
            size_t total = n;
            while (total < len) {
                uint64_t e2;
                if (qcow2_get_entry(s, l1, l1_size, voff + total, &e2, errp) < 0) {
                    return -1;
                }
                if (qcow2_entry_type(s, e2) != QCOW2_CLUSTER_NORMAL ||
                    (e2 & L2E_OFFSET_MASK) != host + total) {
                    break;
                }
                total += len - total < s->cluster_size ? len - total : s->cluster_size;
            }
            if (qcow2_file_pread(s, host, buf, total, errp) < 0) {
                return -1;
            }
            n = total;
        } else if (read_entry(s, e, voff, buf, n, use_backing, errp) < 0) {
            return -1;
        }
        voff += n;
        buf += n;
        len -= n;
    }
    return 0;
}

int qcow2_write_l1_entry(struct qcow2_state *s, uint32_t idx, struct error **errp)
{
    uint8_t be[8];
    be64_put(be, s->l1[idx]);
    return qcow2_file_pwrite(s, s->l1_offset + (uint64_t)idx * 8, be, 8, errp);
}

/* Flush refcount updates before anything is made to point at the clusters. */
static int refcounts_before_pointers(struct qcow2_state *s, struct error **errp)
{
    if (!s->unflushed_refcounts) {
        return 0;
    }
    if (qcow2_barrier(s, errp) < 0) {
        return -1;
    }
    s->unflushed_refcounts = false;
    return 0;
}

int qcow2_flush_deferred(struct qcow2_state *s, struct error **errp)
{
    bool any = false;
    for (size_t i = 0; i < s->l2_cache.count && !any; i++) {
        any = s->l2_cache.entries[i].dirty;
    }
    if (!any) {
        return 0;
    }
    /* The clusters the deferred entries name, and their refcounts, first. */
    if (qcow2_barrier(s, errp) < 0) {
        return -1;
    }
    return qcow2_cache_write_dirty(s, &s->l2_cache, errp);
}

/*
 * Return (pinned) the active L2 table for L1 index l1i, allocating it or
 * copying it if it is shared with a snapshot.
 */
static int l2_for_write(struct qcow2_state *s, uint32_t l1i, uint8_t **l2, uint64_t *l2off,
                        struct error **errp)
{
    uint64_t old = s->l1[l1i] & L1E_OFFSET_MASK;
    uint64_t rc = 0;
    if (old && qcow2_get_refcount(s, old >> s->cluster_bits, &rc, errp) < 0) {
        return -1;
    }
    if (old && rc == 1) {
        /* Before anything is allocated: an L2 table that is also other
         * metadata (a hostile L1 entry) must not be written. */
        if (qcow2_check_overlap(s, old, s->cluster_size, false, errp) < 0) {
            return -1;
        }
        *l2off = old;
        return qcow2_cache_get(s, &s->l2_cache, old, l2, errp);
    }
    /* The old table may be dropped below: nothing of it may stay deferred. */
    if (old && qcow2_flush_deferred(s, errp) < 0) {
        return -1;
    }
    uint64_t nw;
    if (qcow2_alloc_clusters(s, 1, &nw, errp) < 0) {
        return -1;
    }
    uint8_t *tbl = qcow2_cache_get_empty(s, &s->l2_cache, nw);
    if (old) {
        /* Copy of a shared table: its clusters stay shared, so no COPIED flags. */
        uint8_t *src;
        if (qcow2_cache_get(s, &s->l2_cache, old, &src, errp) < 0) {
            goto fail;
        }
        for (uint64_t j = 0; j < s->l2_entries; j++) {
            be64_put(tbl + j * 8, be64_get(src + j * 8) & ~QCOW_OFLAG_COPIED);
        }
        qcow2_cache_put(&s->l2_cache, src);
    }
    if (qcow2_file_pwrite(s, nw, tbl, s->cluster_size, errp) < 0 ||
        refcounts_before_pointers(s, errp) < 0 || qcow2_barrier(s, errp) < 0) {
        goto fail;
    }
    uint64_t saved = s->l1[l1i];
    s->l1[l1i] = nw | QCOW_OFLAG_COPIED;
    if (qcow2_write_l1_entry(s, l1i, errp) < 0) {
        s->l1[l1i] = saved;
        goto fail;
    }
    qcow2_meta_changed(s);
    /* The active L1 no longer references the old table: drop it after the
     * next flush (the L1 entry must be durable first). */
    if (old) {
        qcow2_drop_later(s, old, true);
    }
    *l2 = tbl;
    *l2off = nw;
    return 0;
fail:
    qcow2_cache_put(&s->l2_cache, tbl);
    qcow2_cache_forget(&s->l2_cache, nw);
    qcow2_free_clusters(s, nw, 1, NULL);
    return -1;
}

/* The content a new copy of the cluster starts from. */
static int cow_base(struct qcow2_state *s, uint64_t e, uint64_t cluster_voff, uint8_t *buf,
                    struct error **errp)
{
    return read_entry(s, e, cluster_voff, buf, s->cluster_size,
                      cluster_voff < qcow2_vmstate_offset(s, s->size), errp);
}

/* What a span write does with one guest cluster. */
struct cluster_plan {
    uint64_t old;    /* the L2 entry before the write */
    uint64_t target; /* host cluster the data goes to */
    bool in_place;   /* NORMAL cluster with refcount 1: overwrite */
    bool reuse;      /* preallocated zero cluster with refcount 1: fill it */
};

static int plan_clusters(struct qcow2_state *s, const uint8_t *l2, uint64_t idx0, uint64_t n,
                         struct cluster_plan *plan, uint64_t *need_new, struct error **errp)
{
    *need_new = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e = be64_get(l2 + (idx0 + i) * 8), refs = 0;
        enum qcow2_cluster_type t = qcow2_entry_type(s, e);
        if (check_host_offset(s, e, errp) < 0) {
            return -1;
        }
        if ((t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC) &&
            qcow2_get_refcount(s, (e & L2E_OFFSET_MASK) >> s->cluster_bits, &refs, errp) < 0) {
            return -1;
        }
        plan[i] = (struct cluster_plan){
                .old = e,
                .target = e & L2E_OFFSET_MASK,
                .in_place = t == QCOW2_CLUSTER_NORMAL && refs == 1,
                .reuse = t == QCOW2_CLUSTER_ZERO_ALLOC && refs == 1,
        };
        if (!plan[i].in_place && !plan[i].reuse) {
            (*need_new)++;
        }
    }
    return 0;
}

/* Write the data of one cluster of a span to its planned place. */
static int write_planned(struct qcow2_state *s, const struct cluster_plan *p, uint64_t cvoff,
                         uint64_t in, const uint8_t *src, size_t n, uint8_t *scratch,
                         struct error **errp)
{
    if (p->in_place) {
        return qcow2_data_pwrite(s, p->target + in, src, n, errp);
    }
    if (n == s->cluster_size) {
        return qcow2_data_pwrite(s, p->target, src, n, errp);
    }
    enum qcow2_cluster_type t = qcow2_entry_type(s, p->old);
    if (t == QCOW2_CLUSTER_ZERO_ALLOC || t == QCOW2_CLUSTER_ZERO_PLAIN) {
        memset(scratch, 0, s->cluster_size);
    } else if (cow_base(s, p->old, cvoff, scratch, errp) < 0) {
        return -1;
    }
    memcpy(scratch + in, src, n);
    return qcow2_data_pwrite(s, p->target, scratch, s->cluster_size, errp);
}

static void free_new_clusters(struct qcow2_state *s, const struct cluster_plan *plan, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        if (!plan[i].in_place && !plan[i].reuse) {
            qcow2_free_clusters(s, plan[i].target, 1, NULL);
        }
    }
}

/*
 * L2 updates of the vmstate area may wait (in the cache, pinned) until the
 * next flush point, so that saving RAM costs one flush per snapshot rather
 * than one per allocating write: the vmstate means nothing until
 * block_snapshot_create(), which writes them (after a flush) first.  Only
 * spans that drop no old reference qualify: a reference may be dropped only
 * once the on-disk L2 entry no longer names the cluster.
 */
static bool may_defer(struct qcow2_state *s, uint64_t voff, const struct cluster_plan *plan,
                      uint64_t n)
{
    if (voff < qcow2_vmstate_offset(s, s->size)) {
        return false;
    }
    for (uint64_t i = 0; i < n; i++) {
        enum qcow2_cluster_type t = qcow2_entry_type(s, plan[i].old);
        if (!plan[i].in_place && !plan[i].reuse &&
            (t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC ||
             t == QCOW2_CLUSTER_COMPRESSED)) {
            return false;
        }
    }
    return true;
}

/*
 * Write [voff, voff + len), which lies within the range of one L2 table.
 * Batched so that one flush covers the whole span: allocate every new
 * cluster (refcounts), write all data, flush, then write the changed L2
 * entries in one go, and finally drop the references to replaced clusters.
 */
static int write_span(struct qcow2_state *s, uint64_t voff, const uint8_t *buf, size_t len,
                      uint8_t *scratch, struct error **errp)
{
    uint64_t vc0 = voff >> s->cluster_bits, idx0 = vc0 & (s->l2_entries - 1);
    uint64_t n = ((voff + len - 1) >> s->cluster_bits) - vc0 + 1, need_new, base = 0;
    uint8_t *l2;
    uint64_t l2off;
    if (l2_for_write(s, (uint32_t)(vc0 >> s->l2_bits), &l2, &l2off, errp) < 0) {
        return -1;
    }
    struct cluster_plan *plan = malloc(n * sizeof(*plan));
    if (!plan) {
        abort();
    }
    int rc = plan_clusters(s, l2, idx0, n, plan, &need_new, errp);
    if (rc == 0 && need_new) {
        rc = qcow2_alloc_clusters(s, need_new, &base, errp);
        for (uint64_t i = 0, k = 0; rc == 0 && i < n; i++) {
            if (!plan[i].in_place && !plan[i].reuse) {
                plan[i].target = base + (k++ << s->cluster_bits);
            }
        }
        if (rc < 0) {
            need_new = 0; /* nothing allocated */
        }
    }
    const uint8_t *src = buf;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint64_t i = 0; rc == 0 && i < n; i++) {
        uint64_t cvoff = (vc0 + i) << s->cluster_bits;
        uint64_t in = i == 0 ? voff - cvoff : 0;
        size_t m = s->cluster_size - in < len ? (size_t)(s->cluster_size - in) : len;
        rc = write_planned(s, &plan[i], cvoff, in, src, m, scratch, errp);
        src += m;
        len -= m;
        uint64_t want = plan[i].target | QCOW_OFLAG_COPIED;
        if (rc == 0 && be64_get(l2 + (idx0 + i) * 8) != want) {
            lo = lo < i ? lo : i;
            hi = i;
        }
    }
    if (rc == 0 && lo != UINT64_MAX && may_defer(s, voff, plan, n)) {
        for (uint64_t i = lo; i <= hi; i++) {
            be64_put(l2 + (idx0 + i) * 8, plan[i].target | QCOW_OFLAG_COPIED);
        }
        qcow2_cache_mark_dirty(&s->l2_cache, l2, (idx0 + lo) * 8, (idx0 + hi + 1) * 8);
        lo = UINT64_MAX; /* the entries are written by qcow2_flush_deferred() */
    }
    /* The new clusters' refcounts must be on disk before an L2 entry names them. */
    if (rc == 0 && lo != UINT64_MAX) {
        rc = refcounts_before_pointers(s, errp);
    }
    if (rc == 0 && lo != UINT64_MAX) {
        for (uint64_t i = lo; i <= hi; i++) {
            be64_put(l2 + (idx0 + i) * 8, plan[i].target | QCOW_OFLAG_COPIED);
        }
        rc = qcow2_file_pwrite(s, l2off + (idx0 + lo) * 8, l2 + (idx0 + lo) * 8, (hi - lo + 1) * 8,
                               errp);
        if (rc < 0) {
            for (uint64_t i = lo; i <= hi; i++) {
                be64_put(l2 + (idx0 + i) * 8, plan[i].old);
            }
        }
    }
    if (rc < 0) {
        if (need_new) {
            free_new_clusters(s, plan, n);
        }
    } else {
        /* The active image no longer references the old clusters: drop them
         * once the new L2 entries are durable (next flush). */
        for (uint64_t i = 0; i < n; i++) {
            if (!plan[i].in_place && !plan[i].reuse) {
                qcow2_drop_later(s, plan[i].old, false);
            }
        }
    }
    free(plan);
    qcow2_cache_put(&s->l2_cache, l2);
    return rc;
}

int qcow2_write_active(struct qcow2_state *s, uint64_t voff, const uint8_t *buf, size_t len,
                       struct error **errp)
{
    uint64_t end_l1 = (((voff + len - 1) >> s->cluster_bits) >> s->l2_bits) + 1;
    if (len && end_l1 > s->l1_size && qcow2_grow_l1(s, (uint32_t)end_l1, errp) < 0) {
        return -1;
    }
    uint8_t *scratch = malloc(s->cluster_size);
    if (!scratch) {
        abort();
    }
    uint64_t l2_span = 1ull << (s->cluster_bits + s->l2_bits);
    int rc = 0;
    while (len > 0 && rc == 0) {
        uint64_t room = l2_span - (voff & (l2_span - 1));
        size_t n = room < len ? (size_t)room : len;
        rc = write_span(s, voff, buf, n, scratch, errp);
        voff += n;
        buf += n;
        len -= n;
    }
    free(scratch);
    return rc;
}

/*
 * Grow the active L1 to at least min_size entries: write a bigger copy to
 * new clusters, flush, switch the header (l1_size and l1_table_offset are
 * adjacent: one write), flush, free the old table.
 */
int qcow2_grow_l1(struct qcow2_state *s, uint32_t min_size, struct error **errp)
{
    if (min_size <= s->l1_size) {
        return 0;
    }
    uint64_t want = min_size;
    if ((uint64_t)want * 8 > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "the L1 table would exceed %u MiB", QCOW2_MAX_L1_BYTES >> 20);
        return -1;
    }
    uint64_t bytes = qcow2_align_up(s, want * 8);
    uint64_t entries = bytes / 8;
    uint64_t *nl1 = calloc(entries, sizeof(uint64_t));
    if (!nl1) {
        abort();
    }
    memcpy(nl1, s->l1, (size_t)s->l1_size * 8);
    uint64_t off;
    if (qcow2_alloc_clusters(s, bytes >> s->cluster_bits, &off, errp) < 0) {
        free(nl1);
        return -1;
    }
    uint8_t hdr[12];
    be32_put(hdr, (uint32_t)want);
    be64_put(hdr + 4, off);
    if (qcow2_write_table(s, off, nl1, entries, bytes, errp) < 0 || qcow2_barrier(s, errp) < 0 ||
        qcow2_write_header_field(s, QCOW2_HDR_L1, hdr, sizeof(hdr), errp) < 0 ||
        qcow2_barrier(s, errp) < 0) {
        qcow2_free_clusters(s, off, bytes >> s->cluster_bits, NULL);
        free(nl1);
        return -1;
    }
    uint64_t old_off = s->l1_offset, old_clusters = qcow2_clusters(s, (uint64_t)s->l1_size * 8);
    free(s->l1);
    s->l1 = nl1;
    s->l1_offset = off;
    s->l1_size = (uint32_t)want;
    qcow2_meta_changed(s);
    if (old_off && old_clusters) {
        return qcow2_free_clusters(s, old_off, old_clusters, errp);
    }
    return 0;
}

/* Recompute COPIED bits of one L2 table; write it back if anything changed. */
static int fix_l2_copied(struct qcow2_state *s, uint64_t l2off, struct error **errp)
{
    uint8_t *l2;
    if (qcow2_cache_get(s, &s->l2_cache, l2off, &l2, errp) < 0) {
        return -1;
    }
    bool changed = false;
    int rc = 0;
    for (uint64_t j = 0; j < s->l2_entries && rc == 0; j++) {
        uint64_t e = be64_get(l2 + j * 8), want = e & ~QCOW_OFLAG_COPIED;
        enum qcow2_cluster_type t = qcow2_entry_type(s, e);
        if (t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC) {
            uint64_t refs;
            rc = qcow2_get_refcount(s, (e & L2E_OFFSET_MASK) >> s->cluster_bits, &refs, errp);
            if (refs == 1) {
                want |= QCOW_OFLAG_COPIED;
            }
        }
        if (want != e) {
            be64_put(l2 + j * 8, want);
            changed = true;
        }
    }
    if (rc == 0 && changed) {
        rc = qcow2_file_pwrite(s, l2off, l2, s->cluster_size, errp);
    }
    qcow2_cache_put(&s->l2_cache, l2);
    if (rc < 0 && changed) {
        qcow2_cache_forget(&s->l2_cache, l2off); /* not what the file holds: re-read */
    }
    return rc;
}

int qcow2_fix_copied_table(struct qcow2_state *s, uint64_t *l1, uint32_t size, bool *changed,
                           struct error **errp)
{
    *changed = false;
    for (uint32_t i = 0; i < size; i++) {
        uint64_t l2off = l1[i] & L1E_OFFSET_MASK;
        if (!l2off) {
            continue;
        }
        uint64_t refs;
        if (qcow2_get_refcount(s, l2off >> s->cluster_bits, &refs, errp) < 0 ||
            fix_l2_copied(s, l2off, errp) < 0) {
            return -1;
        }
        uint64_t want = l2off | (refs == 1 ? QCOW_OFLAG_COPIED : 0);
        if (want != l1[i]) {
            l1[i] = want;
            *changed = true;
        }
    }
    return 0;
}

int qcow2_fix_copied(struct qcow2_state *s, struct error **errp)
{
    bool l1_changed;
    if (qcow2_fix_copied_table(s, s->l1, s->l1_size, &l1_changed, errp) < 0) {
        return -1;
    }
    /* A failed write is retried by the next call (the flags in memory are right). */
    if ((l1_changed || s->l1_write_pending) &&
        qcow2_write_table(s, s->l1_offset, s->l1, s->l1_size, (uint64_t)s->l1_size * 8, errp) < 0) {
        s->l1_write_pending = true;
        return -1;
    }
    s->l1_write_pending = false;
    return 0;
}

/* For the vmstate RAM writer (qcow2-vmstate.c), which plans whole clusters itself. */
int qcow2_l2_for_write(struct qcow2_state *s, uint32_t l1i, uint8_t **l2, uint64_t *l2off,
                       struct error **errp)
{
    return l2_for_write(s, l1i, l2, l2off, errp);
}
