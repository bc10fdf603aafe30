/*
 * Repair of the refcounts of a qcow2 image whose dirty bit is set (QEMU
 * with lazy_refcounts=on crashed or was killed: its refcounts may be
 * stale).  Every reference is counted from the metadata itself (header,
 * L1/L2 tables of the active state and of every snapshot, the snapshot
 * table), and a complete new refcount structure is written past the end of
 * the file.  Crash safety: the new structure is written and flushed before
 * the header points to it; the dirty bit is cleared last, so a crash at any
 * point leaves a dirty image that the next open repairs again.
 */
#include "block/qcow2.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

struct counts {
    uint32_t *c;
    uint64_t n;     /* clusters covered */
    uint64_t limit; /* clusters in the file: references past it are corruption */
};

static int count_range(struct qcow2_state *s, struct counts *k, uint64_t off, uint64_t len,
                       struct error **errp)
{
    if (!len) {
        return 0;
    }
    uint64_t first = off >> s->cluster_bits, last = (off + len - 1) >> s->cluster_bits;
    if (last >= k->limit || last < first) {
        error_setg(errp, "reference to %#llx is beyond the end of the file (image corrupt)",
                   (unsigned long long)off);
        return -1;
    }
    if (last >= k->n) {
        uint64_t n = (last + 1) * 2 < k->limit ? (last + 1) * 2 : k->limit;
        uint32_t *c = realloc(k->c, n * sizeof(*c));
        if (!c) {
            abort();
        }
        memset(c + k->n, 0, (n - k->n) * sizeof(*c));
        k->c = c;
        k->n = n;
    }
    for (uint64_t i = first; i <= last; i++) {
        if (k->c[i] == UINT32_MAX) {
            error_setg(errp, "cluster %#llx has too many references",
                       (unsigned long long)(i << s->cluster_bits));
            return -1;
        }
        k->c[i]++;
    }
    return 0;
}

static int count_l1(struct qcow2_state *s, struct counts *k, const uint64_t *l1, uint32_t size,
                    struct error **errp)
{
    uint8_t *l2 = malloc(s->cluster_size);
    if (!l2) {
        abort();
    }
    int rc = 0;
    for (uint32_t i = 0; i < size && rc == 0; i++) {
        uint64_t l2off = l1[i] & L1E_OFFSET_MASK;
        if (!l2off) {
            continue;
        }
        rc = count_range(s, k, l2off, s->cluster_size, errp);
        if (rc == 0) {
            rc = qcow2_file_pread(s, l2off, l2, s->cluster_size, errp);
        }
        for (uint64_t j = 0; j < s->l2_entries && rc == 0; j++) {
            uint64_t e = be64_get(l2 + j * 8);
            switch (qcow2_entry_type(s, e)) {
            case QCOW2_CLUSTER_NORMAL:
            case QCOW2_CLUSTER_ZERO_ALLOC:
                rc = count_range(s, k, e & L2E_OFFSET_MASK, s->cluster_size, errp);
                break;
            case QCOW2_CLUSTER_COMPRESSED: {
                uint64_t off = e & s->cluster_offset_mask;
                uint64_t nsec = ((e >> s->csize_shift) & s->csize_mask) + 1;
                rc = count_range(s, k, off & ~511ull, nsec * 512, errp);
                break;
            }
            default:
                break;
            }
        }
    }
    free(l2);
    return rc;
}

static int count_everything(struct qcow2_state *s, struct counts *k, struct error **errp)
{
    if (count_range(s, k, 0, s->cluster_size, errp) < 0 ||
        count_range(s, k, s->l1_offset, (uint64_t)s->l1_size * 8, errp) < 0 ||
        count_l1(s, k, s->l1, s->l1_size, errp) < 0 ||
        count_range(s, k, s->snapshots_offset, s->snapshots_size, errp) < 0) {
        return -1;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snaps[i];
        uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, sizeof(uint64_t));
        if (!l1) {
            abort();
        }
        int rc = count_range(s, k, sn->l1_offset, (uint64_t)sn->l1_size * 8, errp);
        if (rc == 0) {
            rc = qcow2_read_table(s, sn->l1_offset, l1, sn->l1_size, errp);
        }
        if (rc == 0) {
            rc = count_l1(s, k, l1, sn->l1_size, errp);
        }
        free(l1);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

static void set_count(const struct qcow2_state *s, uint8_t *blk, uint64_t i, uint64_t v)
{
    uint32_t bits = 1u << s->refcount_order;
    if (bits < 8) {
        uint64_t bit = i * bits;
        blk[bit / 8] |= (uint8_t)(v << (bit % 8));
        return;
    }
    uint8_t *p = blk + i * (bits / 8);
    for (int b = (int)(bits / 8) - 1; b >= 0; b--) {
        p[b] = (uint8_t)v;
        v >>= 8;
    }
}

/* Write the new blocks and table at cluster `start` from the counts. */
static int write_structure(struct qcow2_state *s, const struct counts *k, uint64_t start,
                           uint64_t nblocks, uint64_t tc, uint64_t *table, struct error **errp)
{
    uint8_t *blk = malloc(s->cluster_size);
    if (!blk) {
        abort();
    }
    int rc = 0;
    for (uint64_t b = 0; b < nblocks && rc == 0; b++) {
        memset(blk, 0, s->cluster_size);
        for (uint64_t i = 0; i < s->rb_entries; i++) {
            uint64_t c = b * s->rb_entries + i, v = c < k->n ? k->c[c] : 0;
            if (c >= start && c < start + nblocks + tc) {
                v = 1; /* the new structure itself */
            }
            if (v > s->refcount_max) {
                error_setg(errp,
                           "cluster %#llx has %llu references, more than refcount_bits=%u "
                           "can count",
                           (unsigned long long)(c << s->cluster_bits), (unsigned long long)v,
                           1u << s->refcount_order);
                rc = -1;
                break;
            }
            set_count(s, blk, i, v);
        }
        table[b] = (start + b) << s->cluster_bits;
        if (rc == 0) {
            rc = qcow2_file_pwrite(s, table[b], blk, s->cluster_size, errp);
        }
    }
    free(blk);
    if (rc == 0) {
        rc = qcow2_write_table(s, (start + nblocks) << s->cluster_bits, table,
                               tc * s->cluster_size / 8, tc * s->cluster_size, errp);
    }
    return rc;
}

int qcow2_repair_refcounts(struct qcow2_state *s, struct error **errp)
{
    log_info("'%s' was not closed cleanly (dirty bit): rebuilding its refcounts",
             s->node->filename);
    struct counts k = {.limit = qcow2_clusters(s, file_node_size(s->file))};
    if (count_everything(s, &k, errp) < 0) {
        free(k.c);
        error_prepend(errp, "repairing '%s'", s->node->filename);
        return -1;
    }
    uint64_t used = k.n;
    while (used > 0 && k.c[used - 1] == 0) {
        used--;
    }
    uint64_t fclusters = qcow2_clusters(s, file_node_size(s->file));
    uint64_t start = used > fclusters ? used : fclusters;
    uint64_t nblocks = 1, tc = 1;
    for (;;) {
        uint64_t total = start + nblocks + tc;
        uint64_t nb = (total + s->rb_entries - 1) / s->rb_entries;
        uint64_t t = qcow2_clusters(s, nb * 8);
        if (nb == nblocks && t == tc) {
            break;
        }
        nblocks = nb;
        tc = t;
    }
    uint64_t *table = calloc(tc * s->cluster_size / 8, sizeof(uint64_t));
    if (!table) {
        abort();
    }
    uint8_t hdr[12], inc[8];
    be64_put(hdr, (start + nblocks) << s->cluster_bits);
    be32_put(hdr + 8, (uint32_t)tc);
    be64_put(inc, s->incompat & ~QCOW2_INCOMPAT_DIRTY);
    int rc = write_structure(s, &k, start, nblocks, tc, table, errp);
    if (rc == 0) {
        rc = qcow2_barrier(s, errp);
    }
    if (rc == 0) {
        rc = qcow2_write_header_field(s, QCOW2_HDR_REFTABLE, hdr, sizeof(hdr), errp);
    }
    if (rc == 0) {
        rc = qcow2_barrier(s, errp);
    }
    free(k.c);
    if (rc < 0) {
        free(table);
        error_prepend(errp, "repairing '%s'", s->node->filename);
        return -1;
    }
    free(s->reftable);
    s->reftable = table;
    s->reftable_entries = tc * s->cluster_size / 8;
    s->reftable_offset = (start + nblocks) << s->cluster_bits;
    s->reftable_clusters = (uint32_t)tc;
    qcow2_meta_changed(s);
    qcow2_cache_destroy(&s->rb_cache);
    qcow2_cache_init(&s->rb_cache, "refcount block", 16);
    s->free_hint = 0;
    /* COPIED flags follow the true refcounts; then the image is clean. */
    if (qcow2_fix_copied(s, errp) < 0 || qcow2_barrier(s, errp) < 0 ||
        qcow2_write_header_field(s, QCOW2_HDR_INCOMPAT, inc, sizeof(inc), errp) < 0 ||
        qcow2_barrier(s, errp) < 0) {
        return -1;
    }
    s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
    return 0;
}

/*
 * Leak reclaim at a writable open: clusters whose refcount is higher than
 * the references the metadata holds (a kill or an I/O error during a save
 * or in a snapshot operation's cleanup leaves such leaks, never the other
 * way round) get their refcount lowered to the true count.  Refcounts lower
 * than the references (real corruption) make it change nothing: the overlap checks
 * keep such clusters from being reused, and 'qemu-img check -r all' repairs
 * them.  Lowering a refcount is safe in any order and at any crash point:
 * each write only removes a leak.
 */
int qcow2_reclaim_leaks(struct qcow2_state *s, uint64_t *reclaimed, struct error **errp)
{
    *reclaimed = 0;
    struct counts k = {.limit = qcow2_clusters(s, file_node_size(s->file))};
    int rc = count_everything(s, &k, errp);
    if (rc == 0) {
        rc = count_range(s, &k, s->reftable_offset,
                         (uint64_t)s->reftable_clusters << s->cluster_bits, errp);
    }
    for (uint64_t ti = 0; rc == 0 && ti < s->reftable_entries; ti++) {
        if (s->reftable[ti]) {
            rc = count_range(s, &k, s->reftable[ti], s->cluster_size, errp);
        }
    }
    if (rc < 0) {
        free(k.c);
        return -1;
    }
    /* Any refcount below its references means the metadata contradicts itself
     * (a hostile or damaged image): then nothing is changed here. */
    for (uint64_t c = 0; rc == 0 && c < k.n; c++) {
        uint64_t cur;
        if (k.c[c] && (rc = qcow2_get_refcount(s, c, &cur, errp)) == 0 && cur < k.c[c]) {
            error_setg(errp,
                       "cluster %#llx has refcount %llu but %u references (image corrupt; "
                       "repair it with 'qemu-img check -r all')",
                       (unsigned long long)(c << s->cluster_bits), (unsigned long long)cur, k.c[c]);
            rc = -1;
        }
    }
    if (rc < 0) {
        free(k.c);
        return -1;
    }
    s->rb_batch = true;
    for (uint64_t ti = 0; rc == 0 && ti < s->reftable_entries; ti++) {
        if (!s->reftable[ti]) {
            continue;
        }
        for (uint64_t i = 0; rc == 0 && i < s->rb_entries; i++) {
            uint64_t c = ti * s->rb_entries + i, refs = c < k.n ? k.c[c] : 0, cur;
            rc = qcow2_get_refcount(s, c, &cur, errp);
            if (rc == 0 && cur > refs) {
                rc = qcow2_update_refcount(s, c << s->cluster_bits, -(int64_t)(cur - refs), errp);
                *reclaimed += 1;
            }
        }
    }
    s->rb_batch = false;
    if (qcow2_cache_write_dirty(s, &s->rb_cache, rc < 0 ? NULL : errp) < 0) {
        rc = -1;
    }
    free(k.c);
    /* COPIED hints follow the refcounts (those that fell to 1, and those a
     * failed operation left behind). */
    if (rc == 0 && qcow2_fix_copied(s, errp) < 0) {
        rc = -1;
    }
    return rc == 0 ? qcow2_barrier(s, errp) : -1;
}
