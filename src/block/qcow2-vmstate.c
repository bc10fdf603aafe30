/*
 * The qcow2 vmstate area: where a VM's RAM and device state are written
 * before a snapshot takes them over (past the guest disk, at the first L1
 * entry that describes no guest cluster, as the qcow2 spec puts it), its
 * discard after a failed save, and reading or mapping a snapshot's vmstate.
 */
#include "block/qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/writer.h"

static int check_vmstate_range(struct qcow2_state *s, uint64_t pos, uint64_t len,
                               struct error **errp)
{
    uint64_t base = qcow2_vmstate_offset(s, s->size);
    uint64_t max = ((uint64_t)QCOW2_MAX_L1_BYTES / 8) << (s->cluster_bits + s->l2_bits);
    if (pos > max || len > max - pos || base > max - pos - len) {
        error_setg(errp, "node '%s': vmstate range %llu+%llu is too large for this image",
                   s->node->name, (unsigned long long)pos, (unsigned long long)len);
        return -1;
    }
    return 0;
}

int qcow2_vmstate_write(struct block_node *node, uint64_t pos, const void *buf, size_t len,
                        struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (qcow2_check_writable(s, errp) < 0 || check_vmstate_range(s, pos, len, errp) < 0) {
        return -1;
    }
    return qcow2_write_active(s, qcow2_vmstate_offset(s, s->size) + pos, buf, len, errp);
}

int qcow2_vmstate_read(struct block_node *node, uint64_t pos, void *buf, size_t len,
                       struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (check_vmstate_range(s, pos, len, errp) < 0) {
        return -1;
    }
    return qcow2_read_l1(s, s->l1, s->l1_size, qcow2_vmstate_offset(s, s->size) + pos, buf, len,
                         false, errp);
}

static struct qcow2_snapshot *vmstate_snapshot(struct qcow2_state *s, const char *name_or_id,
                                               uint64_t pos, uint64_t len, struct error **errp)
{
    struct qcow2_snapshot *sn = qcow2_snapshot_lookup(s, name_or_id, errp);
    if (sn && (pos > sn->vm_state_size || len > sn->vm_state_size - pos)) {
        error_setg(errp,
                   "node '%s': range %llu+%llu is beyond the vmstate of snapshot '%s' (%llu "
                   "bytes)",
                   s->node->name, (unsigned long long)pos, (unsigned long long)len, sn->name,
                   (unsigned long long)sn->vm_state_size);
        return NULL;
    }
    return sn;
}

/* The snapshot whose vmstate range is asked for, and its L1 (NULL: error). */
static uint64_t *vmstate_snapshot_l1(struct qcow2_state *s, const char *name_or_id, uint64_t pos,
                                     uint64_t len, struct qcow2_snapshot **snp, struct error **errp)
{
    *snp = vmstate_snapshot(s, name_or_id, pos, len, errp);
    return *snp ? qcow2_read_snapshot_l1(s, *snp, errp) : NULL;
}

int qcow2_snapshot_vmstate_read(struct block_node *node, const char *name_or_id, uint64_t pos,
                                void *buf, size_t len, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_snapshot *sn;
    uint64_t *l1 = vmstate_snapshot_l1(s, name_or_id, pos, len, &sn, errp);
    if (!l1) {
        return -1;
    }
    int rc = qcow2_read_l1(s, l1, sn->l1_size, qcow2_vmstate_offset(s, sn->disk_size) + pos, buf,
                           len, false, errp);
    free(l1);
    return rc;
}

int qcow2_snapshot_vmstate_map(struct block_node *node, const char *name_or_id, uint64_t pos,
                               uint64_t len, struct block_extent **extents, size_t *count,
                               struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_snapshot *sn;
    uint64_t *l1 = vmstate_snapshot_l1(s, name_or_id, pos, len, &sn, errp);
    if (!l1) {
        return -1;
    }
    uint64_t base = qcow2_vmstate_offset(s, sn->disk_size);
    size_t cap = 0;
    int rc = 0;
    /* A table's worth of entries at a time: one L2 cache lookup each, not
     * one per cluster (131072 clusters for 8 GiB of RAM). */
    uint64_t *batch = malloc(s->l2_entries * sizeof(*batch));
    size_t have = 0, next = 0;
    if (!batch) {
        abort();
    }
    while (len > 0) {
        uint64_t voff = base + pos, in = voff & (s->cluster_size - 1);
        uint64_t n = s->cluster_size - in < len ? s->cluster_size - in : len;
        if (next == have) {
            uint64_t vc = voff >> s->cluster_bits;
            have = s->l2_entries - (vc & (s->l2_entries - 1));
            next = 0;
            if ((rc = qcow2_get_entries(s, l1, sn->l1_size, voff, batch, have, errp)) < 0) {
                break;
            }
        }
        uint64_t e = batch[next++];
        switch (qcow2_entry_type(s, e)) {
        case QCOW2_CLUSTER_NORMAL:
            block_extent_append(extents, count, &cap,
                                (struct block_extent){.pos = pos,
                                                      .len = n,
                                                      .host_offset = (e & L2E_OFFSET_MASK) + in,
                                                      .kind = BLOCK_EXTENT_DATA});
            break;
        case QCOW2_CLUSTER_COMPRESSED:
            block_extent_append(
                    extents, count, &cap,
                    (struct block_extent){.pos = pos, .len = n, .kind = BLOCK_EXTENT_UNMAPPABLE});
            break;
        default:
            block_extent_append(
                    extents, count, &cap,
                    (struct block_extent){.pos = pos, .len = n, .kind = BLOCK_EXTENT_ZERO});
            break;
        }
        pos += n;
        len -= n;
    }
    free(batch);
    free(l1);
    if (rc < 0) {
        free(*extents);
        *extents = NULL;
        *count = 0;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* the RAM writer: whole clusters from guest RAM, zero pages as holes    */

/*
 * Why whole clusters, built from RAM: a cluster that holds a changed page is
 * rewritten from the caller's buffer in full, so no old cluster is ever read
 * (no read-modify-write), and where the old cluster is shared with a
 * snapshot the new one simply replaces it in the active L2 table (the
 * snapshot keeps its own reference).  Zero pages never occupy disk: an
 * all-zero cluster is left or made unallocated, and inside a cluster that
 * has data only the non-zero page runs are written -- the rest is a hole,
 * either because the cluster is new at the end of the file (never written)
 * or because we punch it.  So a full save costs the disk exactly the
 * non-zero pages, whatever the cluster size.
 *
 * Layout: the new clusters of a call are allocated in one contiguous run
 * per L2 table, so RAM lies in the file in the order of guest memory and a
 * load maps each stretch of non-zero clusters with one mmap().  (All-zero
 * clusters stay unallocated.)  The file is extended over the last new
 * cluster even where its tail is a hole: a mapping past the end of the
 * file would fault.
 *
 * Ordering (the rule of qcow2-cluster.c, batched): allocate every new
 * cluster (refcount 1), write all data and holes (many in flight), then,
 * where an L2 entry replaces one that referenced a cluster, flush
 * (qcow2_barrier: data and new refcounts durable), write the changed L2
 * entries, and queue the drops of the replaced clusters for the next flush.
 * Where nothing is replaced (a fresh vmstate area), the L2 entries stay in
 * the cache until the next flush point (qcow2_flush_deferred), as for
 * qcow2_write_active: one flush per save instead of one per write.
 *
 * Pipelining (in_flight, block.h): a save's first pass calls with one
 * batch after another, and each call plans and allocates its batch while
 * the disk still writes the last one, then waits for that one, submits its
 * own and returns -- so the disk is never idle while a batch is planned
 * (measured: plan and allocation were 0.07 s of a 0.55 s save of 1 GiB of
 * RAM with zero pages interleaved, 0.4 s of 2.0 s at 4 GiB, with the disk
 * idle all that time).  Why this keeps the ordering: such a batch only ever
 * fills clusters no table on disk names yet (a batch that replaces a
 * referenced cluster is waited for before its entries change, as above),
 * its entries stay in the cache, and every flush (qcow2_barrier) first
 * waits for the writes in flight, so an entry reaches the disk only after
 * its data.  A write that fails in flight fails the next call or the wait
 * (ram_settle), which is the save's; its clusters are the area's, freed by
 * the discard of a failed save like the rest.
 *
 * Writeback: each batch, once written, is handed to the disk at once
 * (io_writer_writeback) rather than left dirty in the page cache for the
 * flush.  Ordering is unchanged -- nothing is made durable earlier than it
 * may be, the flushes above are still what the commit points wait for --
 * but the flush then finds little to write, and the disk and the CPU work
 * at the same time: measured on a 1 GiB save, the final fdatasync went from
 * 0.13-0.70 s to 0.04 s and the save from 0.73-0.81 s to 0.58 s.
 */
#define PAGE_SZ                 4096u
#define QCOW2_MAX_CLUSTER_PAGES ((2u << 20) / PAGE_SZ) /* 2 MiB: the largest cluster */

struct ram_cluster {
    uint64_t voff; /* virtual offset of the cluster */
    const uint8_t *src;
    const uint64_t *known_zero; /* the run's (block_vmstate_run), at bit kz_first */
    uint64_t kz_first;
    bool kz_exact;
    bool unmapped;   /* the run's: no page of it in page_map */
    uint64_t old;    /* L2 entry before */
    uint64_t target; /* host cluster (0: all zero, no data) */
    bool in_place;   /* a NORMAL cluster with refcount 1: overwrite */
    bool fresh;      /* new, at or past the end of the file: holes need no punch */
    uint64_t zero[QCOW2_MAX_CLUSTER_PAGES / 64]; /* bit i: page i of the cluster is zero */
    /* bit i: page i was stored non-zero before this write (the caller's map;
     * all set where there is none): only such zero pages of an overwritten
     * cluster are punched -- a punch costs a journal transaction. */
    uint64_t was[QCOW2_MAX_CLUSTER_PAGES / 64];
};

/*
 * A write being gathered: runs adjacent in the file and in memory become
 * one.  Also a hole punch (buf NULL): adjacent ones become one, as each
 * costs the file system a journal transaction -- a save into the clusters
 * a deleted snapshot freed punched 1536 whole clusters one by one.
 */
struct pending_write {
    uint64_t off, len;
    const uint8_t *buf;
};

/* The merged batch: its data and its holes. */
struct pending {
    struct pending_write data, hole;
};

struct ram_group {
    uint32_t l1i;
    uint8_t *l2;
    uint64_t l2off;
    size_t first, count; /* clusters[first .. first + count) */
    bool drops;          /* some entry replaces a referenced cluster */
};

static bool page_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;
    uint64_t acc = 0;
    for (size_t i = 0; i < PAGE_SZ / 8; i++) {
        acc |= w[i];
    }
    return acc == 0;
}

static void map_assign(uint64_t *map, uint64_t i, bool v)
{
    if (v) {
        map[i / 64] |= 1ull << (i % 64);
    } else {
        map[i / 64] &= ~(1ull << (i % 64));
    }
}

static bool cl_zero(const struct ram_cluster *c, uint64_t page)
{
    return c->zero[page / 64] >> (page % 64) & 1;
}

/* Does the cluster hold any non-zero page?  Records every page (mask, map). */
static bool scan_cluster(struct qcow2_state *s, struct ram_cluster *c, uint64_t pos,
                         uint64_t *page_map, uint64_t map_pos)
{
    bool any = false;
    for (uint64_t i = 0; i < s->cluster_size / PAGE_SZ; i++) {
        uint64_t k = c->kz_first + i;
        bool known = c->known_zero && (c->known_zero[k / 64] >> (k % 64) & 1);
        bool nz = !known && (c->kz_exact || !page_zero(c->src + i * PAGE_SZ));
        any |= nz;
        if (!nz) {
            c->zero[i / 64] |= 1ull << (i % 64);
        }
        bool mapped = page_map && pos + i * PAGE_SZ >= map_pos;
        uint64_t idx = mapped ? (pos + i * PAGE_SZ - map_pos) / PAGE_SZ : 0;
        if (!mapped || (page_map[idx / 64] >> (idx % 64) & 1)) {
            c->was[i / 64] |= 1ull << (i % 64);
        }
        if (mapped) {
            map_assign(page_map, idx, nz);
        }
    }
    return any;
}

static void pending_flush(struct io_writer *w, struct pending_write *p)
{
    if (p->len && p->buf) {
        io_writer_write(w, p->off, p->buf, p->len);
    } else if (p->len) {
        io_writer_punch(w, p->off, p->len);
    }
    p->len = 0;
}

/* Add [off, off + len) from buf (NULL: a hole) to p, or send p and start anew. */
static void pending_add(struct io_writer *w, struct pending_write *p, uint64_t off,
                        const uint8_t *buf, uint64_t len)
{
    bool joins = p->len && p->off + p->len == off && p->len < (64u << 20) &&
                 (!buf || p->buf + p->len == buf);
    if (joins) {
        p->len += len;
        return;
    }
    pending_flush(w, p);
    *p = (struct pending_write){.off = off, .len = len, .buf = buf};
}

/*
 * What page i of a planned cluster needs: 0 a data write, 1 a punch (a zero
 * page where data may lie: an overwritten page stored non-zero, or a
 * reused cluster inside the file), 2 nothing (a zero page already a hole).
 */
static int page_action(const struct ram_cluster *c, uint64_t i)
{
    if (!cl_zero(c, i)) {
        return 0;
    }
    bool stale = c->in_place ? c->was[i / 64] >> (i % 64) & 1 : !c->fresh;
    return stale ? 1 : 2;
}

/* Data runs and holes of one cluster (both merged across clusters). */
static void submit_cluster(struct qcow2_state *s, struct io_writer *w, const struct ram_cluster *c,
                           struct pending *p)
{
    uint64_t pages = s->cluster_size / PAGE_SZ, i = 0;
    while (i < pages) {
        int action = page_action(c, i);
        uint64_t end = i + 1;
        while (end < pages && page_action(c, end) == action) {
            end++;
        }
        uint64_t off = c->target + i * PAGE_SZ, len = (end - i) * PAGE_SZ;
        if (action == 0) {
            pending_add(w, &p->data, off, c->src + i * PAGE_SZ, len);
        } else if (action == 1) {
            pending_add(w, &p->hole, off, NULL, len);
        }
        i = end;
    }
}

/* Plan one cluster: what it holds now and where its data goes. */
static int plan_cluster(struct qcow2_state *s, struct ram_group *g, struct ram_cluster *c,
                        uint64_t *page_map, uint64_t map_pos, uint64_t *need_new,
                        struct error **errp)
{
    uint64_t idx = (c->voff >> s->cluster_bits) & (s->l2_entries - 1);
    c->old = be64_get(g->l2 + idx * 8);
    enum qcow2_cluster_type t = qcow2_entry_type(s, c->old);
    bool data = scan_cluster(s, c, c->voff - qcow2_vmstate_offset(s, s->size),
                             c->unmapped ? NULL : page_map, map_pos);
    bool referenced = t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC ||
                      t == QCOW2_CLUSTER_COMPRESSED;
    c->target = 0;
    c->in_place = false;
    if (data && t == QCOW2_CLUSTER_NORMAL) {
        uint64_t host = c->old & L2E_OFFSET_MASK, refs = 0;
        if (host & (s->cluster_size - 1)) {
            error_setg(errp, "L2 entry %#llx points to an unaligned cluster (image corrupt)",
                       (unsigned long long)c->old);
            return -1;
        }
        if (qcow2_get_refcount(s, host >> s->cluster_bits, &refs, errp) < 0) {
            return -1;
        }
        if (refs == 1) {
            if (qcow2_overlaps_metadata(s, host, 1)) {
                error_setg(errp,
                           "node '%s': vmstate L2 entry %#llx points at metadata (image "
                           "corrupt); refusing to write there",
                           s->node->name, (unsigned long long)c->old);
                return -1;
            }
            c->in_place = true;
            c->target = host;
        }
    }
    /*
     * An all-zero cluster where the area has nothing yet still gets its
     * place in the file, as a hole (never written, or punched): RAM then
     * lies in the file exactly as in memory, zero stretches included, and a
     * load maps it in a few long runs instead of one per stretch of data
     * (8 GiB of RAM with data in every other 512 KiB: 8192 mmap() calls,
     * 40 ms, against a handful).  A hole costs no disk space.
     */
    bool place = data || t == QCOW2_CLUSTER_UNALLOCATED || t == QCOW2_CLUSTER_ZERO_PLAIN;
    if (place && !c->in_place) {
        (*need_new)++;
        c->target = 1; /* placeholder: allocated below */
    }
    g->drops |= referenced && !c->in_place;
    return 0;
}

static void release_groups(struct qcow2_state *s, struct ram_group *groups, size_t ng)
{
    for (size_t i = 0; i < ng; i++) {
        if (groups[i].l2) {
            qcow2_cache_put(&s->l2_cache, groups[i].l2);
        }
    }
}

/* The new L2 entry for a planned cluster. */
static uint64_t new_entry(const struct qcow2_state *s, const struct ram_cluster *c)
{
    if (!c->target) {
        return qcow2_entry_type(s, c->old) == QCOW2_CLUSTER_ZERO_PLAIN ? c->old : 0;
    }
    return c->target | QCOW_OFLAG_COPIED;
}

/* Make the group's entries live (phase 4 above); 0 or -1 (entries unchanged). */
static int commit_group(struct qcow2_state *s, struct ram_group *g, struct ram_cluster *cl,
                        bool *flushed, struct error **errp)
{
    uint64_t lo = UINT64_MAX, hi = 0;
    for (size_t k = g->first; k < g->first + g->count; k++) {
        uint64_t idx = (cl[k].voff >> s->cluster_bits) & (s->l2_entries - 1);
        uint64_t want = new_entry(s, &cl[k]);
        if (be64_get(g->l2 + idx * 8) != want) {
            lo = idx < lo ? idx : lo;
            hi = idx > hi ? idx : hi;
            be64_put(g->l2 + idx * 8, want);
        }
    }
    if (lo == UINT64_MAX) {
        return 0;
    }
    if (!g->drops) {
        qcow2_cache_mark_dirty(&s->l2_cache, g->l2, lo * 8, (hi + 1) * 8);
        return 0;
    }
    /* Data and refcounts of the new clusters before any entry names them. */
    int rc = *flushed ? 0 : qcow2_barrier(s, errp);
    *flushed = rc == 0;
    if (rc == 0) {
        rc = qcow2_file_pwrite(s, g->l2off + lo * 8, g->l2 + lo * 8, (hi - lo + 1) * 8, errp);
    }
    if (rc < 0) {
        for (size_t k = g->first; k < g->first + g->count; k++) {
            uint64_t idx = (cl[k].voff >> s->cluster_bits) & (s->l2_entries - 1);
            be64_put(g->l2 + idx * 8, cl[k].old);
        }
        return -1;
    }
    for (size_t k = g->first; k < g->first + g->count; k++) {
        if (cl[k].old != new_entry(s, &cl[k]) && !cl[k].in_place) {
            if (qcow2_entry_type(s, cl[k].old) == QCOW2_CLUSTER_COMPRESSED) {
                s->dbuf_entry = 0;
            }
            qcow2_drop_later(s, cl[k].old, false);
        }
    }
    return 0;
}

/* Whole clusters [voff, voff + len) from src, inside run r: appended to *cl. */
static void add_clusters(struct qcow2_state *s, uint64_t voff, const uint8_t *src, uint64_t len,
                         const struct block_vmstate_run *r, struct ram_cluster **cl, size_t *n,
                         size_t *cap)
{
    uint64_t src_page = (uint64_t)(src - (const uint8_t *)r->buf) / PAGE_SZ;
    for (uint64_t off = 0; off < len; off += s->cluster_size) {
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 256;
            *cl = realloc(*cl, *cap * sizeof(**cl));
            if (!*cl) {
                abort();
            }
        }
        (*cl)[(*n)++] =
                (struct ram_cluster){.voff = voff + off,
                                     .src = src + off,
                                     .known_zero = r->known_zero,
                                     .kz_first = r->known_zero_first + src_page + off / PAGE_SZ,
                                     .kz_exact = r->known_zero && r->zero_map_exact,
                                     .unmapped = r->unmapped};
    }
}

/*
 * The node's RAM writer, made on first use and kept until close: a save's
 * batches then share one ring, and the writeback a batch starts can still be
 * running while the next batch is written.
 */
static struct io_writer *ram_writer(struct qcow2_state *s)
{
    if (!s->ram_writer) {
        s->ram_writer = calloc(1, sizeof(*s->ram_writer));
        if (!s->ram_writer) {
            abort();
        }
        io_writer_init(s->ram_writer, block_node_host_fd(s->file), s->file->filename);
    }
    return s->ram_writer;
}

/*
 * The batch left in flight: wait for it, report its failure, and start the
 * writeback of what went through the page cache.  The drain after the
 * hint waits for nothing; it reports a hint that failed as it was
 * submitted (an I/O error, or the fault hook's), so that the batch fails
 * like any other whose host I/O failed.
 */
static int ram_settle(struct io_writer *w, uint64_t lo, uint64_t hi, struct error **errp)
{
    if (io_writer_drain(w, errp) < 0) {
        return -1;
    }
    if (lo < hi) {
        io_writer_writeback(w, lo, hi - lo);
        return io_writer_drain(w, errp);
    }
    return 0;
}

/* Settle the batch left in flight, if any. */
static int settle_in_flight(struct qcow2_state *s, struct error **errp)
{
    uint64_t lo = s->ram_inflight_lo, hi = s->ram_inflight_hi;
    s->ram_inflight_lo = s->ram_inflight_hi = 0;
    return s->ram_writer ? ram_settle(s->ram_writer, lo, hi, errp) : 0;
}

void qcow2_vmstate_quiesce(struct qcow2_state *s)
{
    if (s->ram_writer) {
        io_writer_wait(s->ram_writer);
    }
}

int qcow2_vmstate_ram_wait(struct block_node *node, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (settle_in_flight(s, errp) < 0) {
        error_prepend(errp, "node '%s': writing the vmstate", node->name);
        return -1;
    }
    return 0;
}

void qcow2_vmstate_close(struct qcow2_state *s)
{
    if (s->ram_writer) {
        io_writer_destroy(s->ram_writer);
        free(s->ram_writer);
        s->ram_writer = NULL;
    }
}

/*
 * The planned clusters' new homes: one contiguous run per L2 table (at
 * most l2_entries at a time: the allocator's search stays short;
 * consecutive runs land next to each other at the end of the file).
 *
 * Their refcounts are batched: each refcount block is written once at the
 * end, not two bytes per cluster (a save of 96 MiB of RAM with zero pages
 * interleaved made 2300 such writes of its 2340).  They are on disk, not
 * yet durable, when this returns, as unbatched ones would be; the flush
 * before any entry names the clusters (commit_group, qcow2_flush_deferred)
 * makes them durable first.  A failure gives every new cluster back.
 */
static int allocate_targets(struct qcow2_state *s, struct ram_group *groups, size_t ng,
                            struct ram_cluster *cl, size_t n, struct error **errp)
{
    uint64_t eof = file_node_size(s->file), end = 0, base = 0;
    bool outer = !s->rb_batch;
    s->rb_batch = true;
    int rc = 0;
    for (size_t gi = 0; rc == 0 && gi < ng; gi++) {
        struct ram_group *g = &groups[gi];
        uint64_t want = 0;
        for (size_t k = g->first; k < g->first + g->count; k++) {
            want += cl[k].target == 1;
        }
        if (want && (rc = qcow2_alloc_clusters(s, want, &base, errp)) == 0) {
            for (size_t k = g->first, j = 0; k < g->first + g->count; k++) {
                if (cl[k].target == 1) {
                    cl[k].target = base + (j++ << s->cluster_bits);
                    cl[k].fresh = cl[k].target >= eof;
                }
            }
            end = base + (want << s->cluster_bits) > end ? base + (want << s->cluster_bits) : end;
        }
    }
    if (outer && qcow2_cache_write_dirty(s, &s->rb_cache, rc < 0 ? NULL : errp) < 0) {
        rc = -1;
    }
    /* Clusters that stay holes to their end must still lie inside the file:
     * a mapping of them past its end would fault (SIGBUS). */
    if (rc == 0 && end > file_node_size(s->file)) {
        rc = file_node_truncate(s->file, end, errp);
    }
    if (rc < 0) {
        for (size_t k = 0; k < n; k++) {
            if (cl[k].target > 1 && !cl[k].in_place) {
                qcow2_free_clusters(s, cl[k].target, 1, NULL);
            }
            cl[k].target = cl[k].in_place ? cl[k].target : 0; /* nothing new */
        }
        if (outer) {
            qcow2_cache_write_dirty(s, &s->rb_cache, NULL); /* a failure here leaks at most */
        }
    }
    s->rb_batch = !outer;
    return rc;
}

static int write_clusters(struct qcow2_state *s, struct ram_cluster *cl, size_t n,
                          uint64_t *page_map, uint64_t map_pos, bool in_flight, struct error **errp)
{
    /* Group by L2 table (the runs come sorted, so each table once). */
    struct ram_group *groups = calloc(n ? n : 1, sizeof(*groups));
    if (!groups) {
        abort();
    }
    size_t ng = 0;
    uint64_t need_new = 0;
    int rc = 0;
    for (size_t k = 0; k < n && rc == 0; k++) {
        uint32_t l1i = (uint32_t)((cl[k].voff >> s->cluster_bits) >> s->l2_bits);
        if (ng == 0 || groups[ng - 1].l1i != l1i) {
            struct ram_group *g = &groups[ng++];
            *g = (struct ram_group){.l1i = l1i, .first = k};
            rc = qcow2_l2_for_write(s, l1i, &g->l2, &g->l2off, errp);
            if (rc < 0) {
                g->l2 = NULL;
                break;
            }
        }
        groups[ng - 1].count++;
        rc = plan_cluster(s, &groups[ng - 1], &cl[k], page_map, map_pos, &need_new, errp);
    }
    if (rc == 0 && need_new) {
        rc = allocate_targets(s, groups, ng, cl, n, errp);
    }
    for (size_t k = 0; rc < 0 && k < n; k++) {
        cl[k].target = cl[k].target == 1 ? 0 : cl[k].target; /* a plan failed: never allocated */
    }
    bool drops = false;
    for (size_t gi = 0; gi < ng; gi++) {
        drops |= groups[gi].drops;
    }
    struct io_writer *w = rc == 0 ? ram_writer(s) : NULL;
    /* The last batch, if left in flight, is written before this one starts. */
    if (w && (rc = settle_in_flight(s, errp)) < 0) {
        w = NULL;
    }
    if (w) {
        struct pending p = {{0}, {0}};
        uint64_t lo = UINT64_MAX, hi = 0;
        for (size_t k = 0; k < n; k++) {
            if (cl[k].target) {
                submit_cluster(s, w, &cl[k], &p);
                lo = cl[k].target < lo ? cl[k].target : lo;
                hi = cl[k].target + s->cluster_size > hi ? cl[k].target + s->cluster_size : hi;
            }
        }
        pending_flush(w, &p.data);
        pending_flush(w, &p.hole);
        if (in_flight && !drops) {
            s->ram_inflight_lo = lo;
            s->ram_inflight_hi = hi;
        } else {
            rc = ram_settle(w, lo, hi, errp);
        }
    }
    bool flushed = false;
    size_t committed = 0;
    while (rc == 0 && committed < ng) {
        rc = commit_group(s, &groups[committed], cl, &flushed, errp);
        committed += rc == 0;
    }
    if (rc < 0) {
        /* New clusters of the groups not made live go back. */
        for (size_t gi = committed; gi < ng; gi++) {
            struct ram_group *g = &groups[gi];
            for (size_t k = g->first; k < g->first + g->count; k++) {
                if (cl[k].target && !cl[k].in_place) {
                    qcow2_free_clusters(s, cl[k].target, 1, NULL);
                }
            }
        }
    }
    release_groups(s, groups, ng);
    free(groups);
    return rc;
}

/*
 * The missing L2 tables of the vmstate area that this write and the rest of
 * the save will need, made in one go: from the first L1 entry of this write
 * to the furthest table the area already has (a save reserves its header
 * and device section, past the RAM, before the RAM: so the first batch of a
 * full save makes the tables of all of RAM), or this write's last entry.
 *
 * Why: qcow2_l2_for_write makes one table with two flushes of its own, and
 * a flush waits for all the writeback in flight -- 16 tables, 32 flushes
 * over an 8 GiB save with 64 KiB clusters.  Here: one run of new clusters,
 * zeroed, one flush (their refcounts and their zeros durable before
 * anything points at them), then each L1 entry, written alone as
 * qcow2_l2_for_write does (an 8-byte write lands whole or not at all).  A
 * failure on the way frees the tables no entry names yet; those already
 * named are the area's, freed with it.
 */
#define RESERVE_MAX_TABLES 64 /* 32 GiB of RAM at 64 KiB clusters */

static int reserve_tables(struct qcow2_state *s, uint32_t from, uint32_t to, struct error **errp)
{
    for (uint32_t i = to; i < s->l1_size; i++) {
        to = s->l1[i] ? i + 1 : to;
    }
    uint32_t missing = 0;
    for (uint32_t i = from; i < to; i++) {
        missing += !s->l1[i];
    }
    /*
     * One table: the ordinary path costs the same.  Many (small clusters:
     * a table per 32 KiB of RAM at 512 bytes): the allocator's search for
     * one long run would cost more than the flushes it saves.
     */
    if (missing < 2 || missing > RESERVE_MAX_TABLES) {
        return 0;
    }
    uint64_t run;
    if (qcow2_alloc_clusters(s, missing, &run, errp) < 0) {
        return -1;
    }
    uint8_t *zeros = calloc(missing, s->cluster_size);
    if (!zeros) {
        abort();
    }
    int rc = qcow2_file_pwrite(s, run, zeros, (uint64_t)missing << s->cluster_bits, errp);
    free(zeros);
    if (rc == 0) {
        rc = qcow2_barrier(s, errp);
    }
    uint32_t used = 0;
    for (uint32_t i = from; i < to && rc == 0; i++) {
        if (!s->l1[i]) {
            s->l1[i] = (run + ((uint64_t)used << s->cluster_bits)) | QCOW_OFLAG_COPIED;
            rc = qcow2_write_l1_entry(s, i, errp);
            if (rc < 0) {
                s->l1[i] = 0;
            } else {
                used++;
            }
        }
    }
    if (used) {
        qcow2_meta_changed(s);
    }
    if (used < missing) {
        qcow2_free_clusters(s, run + ((uint64_t)used << s->cluster_bits), missing - used, NULL);
    }
    return rc;
}

/*
 * Pages outside whole clusters (a partial cluster at the end of RAM, or
 * clusters smaller than a page) through the ordinary write path, page by
 * page: non-zero pages in runs, and a zero page only where the map says a
 * non-zero one is stored (or where there is no map).
 */
static int write_pages(struct qcow2_state *s, uint64_t base, uint64_t pos, const uint8_t *buf,
                       uint64_t len, uint64_t *page_map, uint64_t map_pos, struct error **errp)
{
    static const uint8_t zero_page[PAGE_SZ];
    uint64_t run = 0; /* bytes of non-zero pages gathered at pos - run */
    for (uint64_t off = 0; off <= len; off += PAGE_SZ) {
        bool end = off + PAGE_SZ > len;
        bool nz = !end && !page_zero(buf + off);
        if (run && (end || !nz)) {
            if (qcow2_write_active(s, base + pos + off - run, buf + off - run, run, errp) < 0) {
                return -1;
            }
            run = 0;
        }
        if (end) {
            break;
        }
        uint64_t idx = (pos + off - map_pos) / PAGE_SZ;
        bool mapped = page_map && pos + off >= map_pos;
        if (nz) {
            run += PAGE_SZ;
        } else if ((!mapped || page_map[idx / 64] >> (idx % 64) & 1) &&
                   qcow2_write_active(s, base + pos + off, zero_page, PAGE_SZ, errp) < 0) {
            return -1;
        }
        if (mapped) {
            map_assign(page_map, idx, nz);
        }
    }
    return 0;
}

int qcow2_vmstate_write_ram(struct block_node *node, const struct block_vmstate_run *runs, size_t n,
                            uint64_t *page_map, uint64_t map_pos, bool in_flight,
                            struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    uint64_t base = qcow2_vmstate_offset(s, s->size);
    struct ram_cluster *cl = NULL;
    size_t ncl = 0, cap = 0;
    int rc = qcow2_check_writable(s, errp);
    uint64_t first_l1 = UINT64_MAX, end_l1 = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct block_vmstate_run *r = &runs[i];
        rc = check_vmstate_range(s, r->pos, r->len, errp);
        if (rc == 0 && r->len) {
            uint64_t f = ((base + r->pos) >> s->cluster_bits) >> s->l2_bits;
            uint64_t e = (((base + r->pos + r->len - 1) >> s->cluster_bits) >> s->l2_bits) + 1;
            first_l1 = f < first_l1 ? f : first_l1;
            end_l1 = e > end_l1 ? e : end_l1;
        }
    }
    if (rc == 0 && end_l1 > s->l1_size) {
        rc = qcow2_grow_l1(s, (uint32_t)end_l1, errp);
    }
    if (rc == 0 && first_l1 < end_l1) {
        rc = reserve_tables(s, (uint32_t)first_l1, (uint32_t)end_l1, errp);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct block_vmstate_run *r = &runs[i];
        const uint8_t *buf = r->buf;
        uint64_t pos = r->pos, len = r->len;
        uint64_t *map = r->unmapped ? NULL : page_map;
        /* Clusters the run covers whole go through the batch; the rest (a
         * partial cluster at either end, clusters smaller than a page)
         * through the ordinary write path. */
        bool batch = s->cluster_size >= PAGE_SZ;
        uint64_t head =
                batch ? (s->cluster_size - (pos & (s->cluster_size - 1))) & (s->cluster_size - 1)
                      : len;
        head = head < len ? head : len;
        if (head) {
            rc = write_pages(s, base, pos, buf, head, map, map_pos, errp);
            pos += head, buf += head, len -= head;
        }
        uint64_t whole = len & ~(s->cluster_size - 1);
        if (rc == 0 && whole) {
            add_clusters(s, base + pos, buf, whole, r, &cl, &ncl, &cap);
            pos += whole, buf += whole, len -= whole;
        }
        if (rc == 0 && len) {
            rc = write_pages(s, base, pos, buf, len, map, map_pos, errp);
        }
    }
    if (rc == 0 && ncl) {
        rc = write_clusters(s, cl, ncl, page_map, map_pos, in_flight, errp);
    } else if (rc == 0) {
        rc = settle_in_flight(s, errp); /* nothing of this batch left in flight, nor of the last */
    }
    free(cl);
    if (rc < 0) {
        error_prepend(errp, "node '%s': writing the vmstate", node->name);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* sharing a snapshot's vmstate with the active area (incremental saves) */

static struct qcow2_snapshot *snapshot_by_id(struct qcow2_state *s, const char *id,
                                             struct error **errp)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (!strcmp(s->snaps[i].id, id)) {
            return &s->snaps[i];
        }
    }
    error_setg(errp, "node '%s': no snapshot with id '%s'", s->node->name, id);
    return NULL;
}

/* The snapshot's vmstate part of its L1 (other entries zero), or NULL. */
static uint64_t *vmstate_l1(struct qcow2_state *s, const struct qcow2_snapshot *sn, uint32_t *from,
                            struct error **errp)
{
    if (sn->disk_size != s->size) {
        error_setg(errp, "node '%s': snapshot '%s' has a different disk size", s->node->name,
                   sn->name);
        return NULL;
    }
    uint64_t *l1 = qcow2_read_snapshot_l1(s, sn, errp);
    if (!l1) {
        return NULL;
    }
    *from = qcow2_guest_l1_entries(s, sn->l1_size);
    memset(l1, 0, (size_t)*from * 8);
    return l1;
}

/*
 * The commit write of a share failed: did it land?  A write that failed
 * did not reach the page cache, so the entries read back are what a
 * re-open sees (the argument of qcow2_txn_abort).  None of them: the share
 * is undone, raised refcounts included (they were 2-3 thousand leaked
 * clusters per failed share of a 96 MiB vmstate).  All: it took effect
 * after all, and the area shares (false).  Anything else, or no read:
 * forgotten in memory, leaked on disk.
 */
static bool share_failed(struct qcow2_state *s, const uint64_t *l1, uint32_t from, uint32_t to)
{
    uint64_t n = to - from, none = 0, all = 0;
    uint8_t *back = malloc(n * 8);
    if (!back) {
        abort();
    }
    bool read = qcow2_file_pread(s, s->l1_offset + (uint64_t)from * 8, back, n * 8, NULL) == 0;
    for (uint64_t i = 0; read && i < n; i++) {
        uint64_t e = be64_get(back + i * 8);
        none += e == 0;
        all += e == s->l1[from + i];
    }
    free(back);
    if (read && all == n) {
        return false;
    }
    for (uint32_t i = from; i < to; i++) {
        s->l1[i] = 0;
    }
    if (read && none == n) {
        qcow2_update_l1_refcounts(s, l1, from, to, -1, NULL); /* a failure here leaks, as before */
    }
    return true;
}

/*
 * Make the (empty) active vmstate area share snapshot `id`'s vmstate: the
 * active L1 gets the snapshot's vmstate L2 tables, one more reference each
 * (and on every data cluster), so that the next save rewrites only what it
 * must -- a write to a shared cluster or table copies it (qcow2-cluster.c),
 * the snapshot keeps its own.  Ordering: raise the refcounts, flush; clear
 * the COPIED flags that no longer hold (in tables the snapshot shares: the
 * flag means nothing to an inactive table), flush; then the commit, the
 * active L1 write.  A failure before the commit leaks the raised refcounts
 * at most; the snapshot itself is never changed in meaning.
 */
int qcow2_vmstate_share(struct block_node *node, const char *id, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (qcow2_check_writable(s, errp) < 0) {
        return -1;
    }
    struct qcow2_snapshot *sn = snapshot_by_id(s, id, errp);
    uint32_t from = 0;
    uint64_t *l1 = sn ? vmstate_l1(s, sn, &from, errp) : NULL;
    if (!l1) {
        return -1;
    }
    uint32_t to = sn->l1_size;
    for (uint32_t i = qcow2_guest_l1_entries(s, s->l1_size); i < s->l1_size; i++) {
        if (s->l1[i]) {
            free(l1);
            error_setg(errp, "node '%s': the vmstate area is in use", node->name);
            return -1;
        }
    }
    bool changed;
    int rc = 0;
    if (from < to) {
        rc = qcow2_grow_l1(s, to, errp);
    }
    if (rc == 0 && from < to) {
        rc = qcow2_update_l1_refcounts(s, l1, from, to, 1, errp);
        if (rc == 0 && ((rc = qcow2_barrier(s, errp)) < 0 ||
                        (rc = qcow2_fix_copied_table(s, l1, to, &changed, errp)) < 0 ||
                        (rc = qcow2_barrier(s, errp)) < 0)) {
            qcow2_update_l1_refcounts(s, l1, from, to, -1, NULL);
        }
    }
    if (rc == 0 && from < to) {
        for (uint32_t i = from; i < to; i++) {
            s->l1[i] = l1[i] & L1E_OFFSET_MASK; /* shared: no COPIED */
        }
        /* The commit point: the active L1 names the shared tables. */
        struct error *err = NULL;
        rc = qcow2_write_table(s, s->l1_offset, s->l1, s->l1_size, (uint64_t)s->l1_size * 8, &err);
        if (rc < 0 && share_failed(s, l1, from, to)) {
            error_propagate(errp, err);
        } else {
            error_free(err);
            rc = 0;
        }
    }
    free(l1);
    if (rc < 0) {
        error_prepend(errp, "node '%s': sharing the vmstate of snapshot '%s'", node->name, id);
    }
    return rc;
}

bool qcow2_vmstate_shares(struct block_node *node, const char *id)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_snapshot *sn = snapshot_by_id(s, id, NULL);
    uint32_t from = 0;
    uint64_t *l1 = sn ? vmstate_l1(s, sn, &from, NULL) : NULL;
    if (!l1) {
        return false;
    }
    uint32_t afrom = qcow2_guest_l1_entries(s, s->l1_size);
    bool same = afrom == from && from < sn->l1_size;
    for (uint32_t i = from; same && i < (s->l1_size > sn->l1_size ? s->l1_size : sn->l1_size);
         i++) {
        uint64_t a = i < s->l1_size ? s->l1[i] & L1E_OFFSET_MASK : 0;
        uint64_t b = i < sn->l1_size ? l1[i] : 0;
        same = a == b;
    }
    free(l1);
    return same;
}

/*
 * Does the host cluster at `off` hold data, or is it all hole (an all-zero
 * RAM cluster keeps its place in the file as a hole, see the RAM writer)?
 * Holes take no disk space, so the space figures leave them out.  The
 * answer for a whole stretch is remembered: clusters come mostly in file
 * order, so it costs about two lseek() calls per stretch, not per cluster.
 */
struct data_cursor {
    int fd;
    uint64_t lo, hi; /* [lo, hi) is known to be all data (data) or all hole */
    bool data;
};

static bool cluster_has_data(struct data_cursor *c, uint64_t off, uint64_t size)
{
    if (c->fd < 0) {
        return true;
    }
    if (off >= c->lo && off < c->hi && (c->data || off + size <= c->hi)) {
        return c->data;
    }
    off_t d = lseek(c->fd, (off_t)off, SEEK_DATA);
    if (d < 0) {
        if (errno != ENXIO) {
            return true; /* cannot tell: count it */
        }
        *c = (struct data_cursor){.fd = c->fd, .lo = off, .hi = UINT64_MAX, .data = false};
        return false;
    }
    if ((uint64_t)d >= off + size) {
        *c = (struct data_cursor){.fd = c->fd, .lo = off, .hi = (uint64_t)d, .data = false};
        return false;
    }
    off_t h = lseek(c->fd, d, SEEK_HOLE);
    *c = (struct data_cursor){.fd = c->fd,
                              .lo = (uint64_t)d,
                              .hi = h < 0 ? (uint64_t)d + 1 : (uint64_t)h,
                              .data = true};
    return true;
}

/* Bytes a snapshot's vmstate references on disk, and bytes only it holds. */
int qcow2_snapshot_space(struct block_node *node, const char *name_or_id, uint64_t *stored,
                         uint64_t *exclusive, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_snapshot *sn = qcow2_snapshot_lookup(s, name_or_id, errp);
    uint64_t *l1 = sn ? qcow2_read_snapshot_l1(s, sn, errp) : NULL;
    if (!l1) {
        return -1;
    }
    uint32_t vm_from = qcow2_guest_l1_entries(s, sn->l1_size);
    /* The active area's share of it (incremental saves) goes with it:
     * snapvm lets the area go before deleting the snapshot it shares. */
    bool area = qcow2_vmstate_shares(node, sn->id);
    uint64_t refs;
    int rc = 0;
    struct data_cursor holes = {.fd = block_node_host_fd(node)};
    *stored = 0;
    *exclusive = qcow2_align_up(s, (uint64_t)sn->l1_size * 8); /* its L1 table */
    for (uint32_t i = 0; i < sn->l1_size && rc == 0; i++) {
        if (!l1[i]) {
            continue;
        }
        uint8_t *l2;
        if ((rc = qcow2_get_refcount(s, l1[i] >> s->cluster_bits, &refs, errp)) < 0 ||
            (rc = qcow2_cache_get(s, &s->l2_cache, l1[i], &l2, errp)) < 0) {
            break;
        }
        uint64_t alone = area && i >= vm_from ? 2 : 1; /* references if only it holds it */
        if (refs <= alone) {
            *exclusive += s->cluster_size;
        }
        for (uint64_t j = 0; j < s->l2_entries && rc == 0; j++) {
            uint64_t e = be64_get(l2 + j * 8);
            if (qcow2_entry_type(s, e) != QCOW2_CLUSTER_NORMAL) {
                continue;
            }
            if (!cluster_has_data(&holes, e & L2E_OFFSET_MASK, s->cluster_size)) {
                continue;
            }
            rc = qcow2_get_refcount(s, (e & L2E_OFFSET_MASK) >> s->cluster_bits, &refs, errp);
            if (i >= vm_from) {
                *stored += s->cluster_size;
            }
            if (rc == 0 && refs <= alone) {
                *exclusive += s->cluster_size;
            }
        }
        qcow2_cache_put(&s->l2_cache, l2);
    }
    free(l1);
    return rc;
}
