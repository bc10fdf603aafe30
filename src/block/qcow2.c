/*
 * The qcow2 format driver: opening an image (header and header-extension
 * parsing with every field validated against the file, so that a corrupt or
 * hostile image yields an error, never a crash), in-place header updates,
 * guest reads/writes and flush.  Mapping, refcounts and snapshots live in
 * qcow2-cluster.c, qcow2-refcount.c and qcow2-snapshot.c.
 *
 * snapvm updates refcounts eagerly even on lazy_refcounts images (allowed:
 * lazy refcounts are a compatible feature), so it never sets the dirty bit.
 * An image whose dirty bit is set (left by QEMU with lazy refcounts) is
 * read as it is when opened read-only, and has its refcounts rebuilt
 * (qcow2-repair.c) when opened for writing, as QEMU does.
 * Header extensions are never rewritten: snapvm only updates fixed header
 * fields in place, so unknown extensions stay intact byte for byte (the one
 * exception is snapvm's own application extension, qcow2-header-ext.c,
 * which touches only its own bytes and the end marker).
 */
#include "block/qcow2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "util/keyval.h"
#include "util/log.h"

#define L2_CACHE_ENTRIES 64
#define RB_CACHE_ENTRIES 16

static const char *const qcow2_opts[] = {
        "file",
        "backing",
        "lazy-refcounts",
        "cache-size",
        "l2-cache-size",
        "refcount-cache-size",
        "cache-clean-interval",
        "discard-no-unref",
        NULL,
};

/* ---- helpers used by the other qcow2 files ---- */

void qcow2_drop_later(struct qcow2_state *s, uint64_t entry, bool is_table)
{
    if (s->n_pending_drops == s->cap_pending_drops) {
        s->cap_pending_drops = s->cap_pending_drops ? s->cap_pending_drops * 2 : 64;
        s->pending_drops = realloc(s->pending_drops, s->cap_pending_drops * sizeof(uint64_t));
        if (!s->pending_drops) {
            abort();
        }
    }
    /* A table offset is stored as a NORMAL entry: same refcount effect. */
    s->pending_drops[s->n_pending_drops++] = is_table ? (entry & L2E_OFFSET_MASK) : entry;
}

/*
 * A reference may be dropped only once nothing on disk can still point to
 * the cluster through the replaced entry, i.e. after the flush that made the
 * new entry durable; otherwise a power loss could leave the old entry with a
 * refcount that no longer counts it.  The drops themselves need no flush:
 * losing them only leaks.
 */
int qcow2_barrier(struct qcow2_state *s, struct error **errp)
{
    qcow2_vmstate_quiesce(s); /* data left in flight is part of what this flush makes durable */
    s->unflushed_refcounts = false;
    if (bdrv_child_flush(s->file, errp) < 0) {
        return -1;
    }
    size_t n = s->n_pending_drops, i;
    s->n_pending_drops = 0;
    int rc = 0;
    for (i = 0; i < n && rc == 0; i++) {
        rc = qcow2_update_entry_refcount(s, s->pending_drops[i], -1, errp);
    }
    if (rc < 0) {
        /* The failed drop and the ones after it stay queued for the next
         * barrier (a failed refcount write leaves that count unchanged), so a
         * one-off I/O error does not leak them.  (A compressed entry spanning
         * two clusters may have been dropped in half: that half would drop
         * twice, so it is not retried; it leaks.) */
        size_t failed = i - 1;
        bool retry = qcow2_entry_type(s, s->pending_drops[failed]) != QCOW2_CLUSTER_COMPRESSED;
        size_t from = retry ? failed : failed + 1;
        memmove(s->pending_drops, s->pending_drops + from, (n - from) * sizeof(uint64_t));
        s->n_pending_drops = n - from;
    }
    return rc;
}

int qcow2_file_pread(struct qcow2_state *s, uint64_t off, void *buf, size_t len,
                     struct error **errp)
{
    return bdrv_child_pread(s->file, off, buf, len, errp);
}

/* Every metadata write of the driver: overlap-checked first (qcow2-overlap.c). */
int qcow2_file_pwrite(struct qcow2_state *s, uint64_t off, const void *buf, size_t len,
                      struct error **errp)
{
    if (qcow2_check_overlap(s, off, len, false, errp) < 0) {
        return -1;
    }
    return bdrv_child_pwrite(s->file, off, buf, len, errp);
}

int qcow2_data_pwrite(struct qcow2_state *s, uint64_t off, const void *buf, size_t len,
                      struct error **errp)
{
    if (qcow2_check_overlap(s, off, len, true, errp) < 0) {
        return -1;
    }
    return bdrv_child_pwrite(s->file, off, buf, len, errp);
}

int qcow2_check_host_range(struct qcow2_state *s, uint64_t off, uint64_t len, const char *what,
                           struct error **errp)
{
    if (off + len <= s->fsize_seen && off + len >= off) {
        return 0;
    }
    s->fsize_seen = file_node_size(s->file);
    if (off + len <= s->fsize_seen && off + len >= off) {
        return 0;
    }
    error_setg(errp,
               "node '%s': %s at %#llx lies beyond the end of the image file (%llu bytes): "
               "the image is corrupt; repair it with 'qemu-img check -r all'",
               s->node->name, what, (unsigned long long)off, (unsigned long long)s->fsize_seen);
    return -1;
}

int qcow2_write_header_field(struct qcow2_state *s, uint64_t off, const void *buf, size_t len,
                             struct error **errp)
{
    /* Every field group snapvm switches lies in the first 512-byte sector,
     * so the write is atomic with respect to power loss. */
    return bdrv_child_pwrite(s->file, off, buf, len, errp);
}

int qcow2_write_table(struct qcow2_state *s, uint64_t off, const uint64_t *table, size_t n,
                      uint64_t bytes, struct error **errp)
{
    uint8_t *buf = calloc(1, bytes ? bytes : 1);
    if (!buf) {
        abort();
    }
    for (size_t i = 0; i < n && (i + 1) * 8 <= bytes; i++) {
        be64_put(buf + i * 8, table[i]);
    }
    int rc = qcow2_file_pwrite(s, off, buf, bytes, errp);
    free(buf);
    return rc;
}

int qcow2_read_table(struct qcow2_state *s, uint64_t off, uint64_t *table, size_t n,
                     struct error **errp)
{
    uint8_t *buf = malloc(n ? n * 8 : 1);
    if (!buf) {
        abort();
    }
    int rc = qcow2_file_pread(s, off, buf, n * 8, errp);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        table[i] = be64_get(buf + i * 8);
    }
    free(buf);
    return rc;
}

/* ---- open ---- */

struct header_ext_info {
    bool bitmaps; /* persistent dirty bitmaps: clusters the repair cannot count */
    char backing_fmt[32];
    const uint8_t *feature_table;
    uint32_t feature_table_len;
};

/* The image's own name for a feature (feature name table), else ours. */
static const char *feature_name(const struct header_ext_info *x, int type, int bit, char *buf,
                                size_t buflen)
{
    static const char *const known[] = {"dirty bit", "corrupt bit", "external data file",
                                        "compression type", "extended L2 entries"};
    for (uint32_t i = 0; i + 48 <= x->feature_table_len; i += 48) {
        const uint8_t *f = x->feature_table + i;
        if (f[0] == type && f[1] == bit) {
            snprintf(buf, buflen, "%.46s", (const char *)f + 2);
            return buf;
        }
    }
    return type == 0 && bit < 5 ? known[bit] : "unknown feature";
}

static int parse_extensions(struct qcow2_state *s, const uint8_t *hdr, uint64_t start, uint64_t end,
                            struct header_ext_info *x, struct error **errp)
{
    uint64_t p = start;
    while (p + 8 <= end) {
        uint32_t type = be32_get(hdr + p), len = be32_get(hdr + p + 4);
        if (type == 0) {
            return 0;
        }
        if (len > end - p - 8) {
            error_setg(errp, "header extension %#x (%u bytes) runs past the header cluster", type,
                       len);
            return -1;
        }
        const uint8_t *data = hdr + p + 8;
        if (type == QCOW2_EXT_BACKING_FORMAT) {
            if (len >= sizeof(x->backing_fmt)) {
                error_setg(errp, "backing format name is too long (%u bytes)", len);
                return -1;
            }
            memcpy(x->backing_fmt, data, len);
            x->backing_fmt[len] = 0;
        } else if (type == QCOW2_EXT_BITMAPS) {
            x->bitmaps = true;
        } else if (type == QCOW2_EXT_FEATURE_TABLE) {
            x->feature_table = data;
            x->feature_table_len = len;
        } else if (type == QCOW2_EXT_DATA_FILE) {
            error_setg(errp, "images with an external data file are not supported");
            return -1;
        }
        p += 8 + ((len + 7ull) & ~7ull);
    }
    (void)s;
    return 0;
}

static int check_features(struct qcow2_state *s, const struct header_ext_info *x,
                          const char *filename, struct error **errp)
{
    uint64_t supported = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_COMPRESSION;
    uint64_t bad = s->incompat & ~supported;
    if (bad) {
        int bit = __builtin_ctzll(bad);
        char name[48];
        error_setg(errp, "'%s' uses an unsupported incompatible feature: %s (bit %d)", filename,
                   feature_name(x, 0, bit, name, sizeof(name)), bit);
        return -1;
    }
    if (!!(s->incompat & QCOW2_INCOMPAT_COMPRESSION) != (s->compression_type != 0)) {
        error_setg(errp, "'%s': compression type %u contradicts the compression type bit", filename,
                   s->compression_type);
        return -1;
    }
    if (s->compression_type > 1) {
        error_setg(errp, "'%s': unknown compression type %u", filename, s->compression_type);
        return -1;
    }
    if (s->node->read_only) {
        return 0;
    }
    if (s->incompat & QCOW2_INCOMPAT_CORRUPT) {
        error_setg(errp,
                   "'%s' is marked corrupt; open it read-only or repair it with "
                   "'qemu-img check -r all'",
                   filename);
        return -1;
    }
    return 0;
}

/* Fixed-header fields: validate each against the file before using it. */
static int parse_header(struct qcow2_state *s, const uint8_t *h, uint64_t hlen, const char *fn,
                        struct error **errp)
{
    if (hlen < 72 || be32_get(h) != QCOW2_MAGIC) {
        error_setg(errp, "'%s' is not a qcow2 image (bad magic)", fn);
        return -1;
    }
    s->version = be32_get(h + 4);
    if (s->version != 2 && s->version != 3) {
        error_setg(errp, "'%s': unsupported qcow2 version %u", fn, s->version);
        return -1;
    }
    s->cluster_bits = be32_get(h + 20);
    if (s->cluster_bits < 9 || s->cluster_bits > 21) {
        error_setg(errp, "'%s': cluster_bits %u is outside 9..21 (512 B to 2 MiB)", fn,
                   s->cluster_bits);
        return -1;
    }
    s->cluster_size = 1ull << s->cluster_bits;
    s->l2_bits = s->cluster_bits - 3;
    s->l2_entries = 1ull << s->l2_bits;
    s->size = be64_get(h + 24);
    if (be32_get(h + 32) != 0) {
        error_setg(errp, "'%s' is encrypted; encrypted images are not supported", fn);
        return -1;
    }
    s->l1_size = be32_get(h + 36);
    s->l1_offset = be64_get(h + 40);
    s->reftable_offset = be64_get(h + 48);
    s->reftable_clusters = be32_get(h + 56);
    s->nb_snapshots = be32_get(h + 60);
    s->snapshots_offset = be64_get(h + 64);
    s->refcount_order = 4;
    s->header_length = 72;
    if (s->version == 3) {
        if (hlen < 104) {
            error_setg(errp, "'%s': truncated version 3 header", fn);
            return -1;
        }
        s->incompat = be64_get(h + 72);
        s->compat = be64_get(h + 80);
        s->autoclear = be64_get(h + 88);
        s->refcount_order = be32_get(h + 96);
        s->header_length = be32_get(h + 100);
        if (s->header_length < 104 || s->header_length % 8 || s->header_length > s->cluster_size ||
            s->header_length > hlen) {
            error_setg(errp, "'%s': invalid header_length %u", fn, s->header_length);
            return -1;
        }
        if (s->header_length > 104) {
            s->compression_type = h[104];
        }
    }
    if (s->refcount_order > 6) {
        error_setg(errp, "'%s': refcount_order %u exceeds 6 (64-bit refcounts)", fn,
                   s->refcount_order);
        return -1;
    }
    /* Derived geometry (the compressed descriptor layout is the spec's). */
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (1ull << (s->cluster_bits - 8)) - 1;
    s->cluster_offset_mask = (1ull << s->csize_shift) - 1;
    return 0;
}

/* Tables must be cluster-aligned, within QEMU's limits, and inside the file. */
static int check_tables(struct qcow2_state *s, uint64_t fsize, const char *fn, struct error **errp)
{
    uint64_t l2_span = 1ull << (s->cluster_bits + s->l2_bits);
    if (s->size > (1ull << 62) || (uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
        (s->size + l2_span - 1) / l2_span > s->l1_size) {
        error_setg(errp, "'%s': L1 table size %u does not fit the disk size %llu", fn, s->l1_size,
                   (unsigned long long)s->size);
        return -1;
    }
    if ((s->l1_offset & (s->cluster_size - 1)) ||
        (s->l1_size && (s->l1_offset == 0 || s->l1_offset > fsize ||
                        (uint64_t)s->l1_size * 8 > fsize - s->l1_offset))) {
        error_setg(errp, "'%s': L1 table offset %#llx is invalid or beyond the end of the file", fn,
                   (unsigned long long)s->l1_offset);
        return -1;
    }
    uint64_t rt_bytes = (uint64_t)s->reftable_clusters << s->cluster_bits;
    if ((s->reftable_offset & (s->cluster_size - 1)) || s->reftable_clusters == 0 ||
        rt_bytes > QCOW2_MAX_REFTABLE_BYTES || s->reftable_offset == 0 ||
        s->reftable_offset > fsize || rt_bytes > fsize - s->reftable_offset) {
        error_setg(errp,
                   "'%s': refcount table (offset %#llx, %u clusters) is invalid or beyond the "
                   "end of the file",
                   fn, (unsigned long long)s->reftable_offset, s->reftable_clusters);
        return -1;
    }
    s->l1_vm_state_index = (uint32_t)((s->size + l2_span - 1) / l2_span);
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS ||
        (s->nb_snapshots && ((s->snapshots_offset & (s->cluster_size - 1)) ||
                             s->snapshots_offset == 0 || s->snapshots_offset >= fsize))) {
        error_setg(errp, "'%s': snapshot table (offset %#llx, %u entries) is invalid", fn,
                   (unsigned long long)s->snapshots_offset, s->nb_snapshots);
        return -1;
    }
    return 0;
}

/*
 * The files of the backing chain being opened (open is recursive and runs on
 * one thread), so that a chain that comes back to one of its own files is
 * refused by name instead of recursing to the depth limit.
 */
#define CHAIN_MAX 64
static __thread struct {
    dev_t dev;
    ino_t ino;
} chain[CHAIN_MAX];

static int check_chain_loop(struct qcow2_state *s, const char *path, int depth, struct error **errp)
{
    struct stat st, self;
    int fd = block_node_host_fd(s->file);
    if (depth < 0 || depth >= CHAIN_MAX - 1 || fd < 0 || fstat(fd, &self) < 0) {
        return 0; /* the depth limit still applies */
    }
    chain[depth].dev = self.st_dev;
    chain[depth].ino = self.st_ino;
    if (stat(path, &st) < 0) {
        return 0; /* opening it reports the error */
    }
    for (int d = 0; d <= depth; d++) {
        if (chain[d].dev == st.st_dev && chain[d].ino == st.st_ino) {
            error_setg(errp, "the backing chain loops: '%s' is already in it%s", path,
                       d == depth ? " (the image is its own backing file)" : "");
            return -1;
        }
    }
    return 0;
}

static int open_backing(struct qcow2_state *s, const uint8_t *h, json_t *opts,
                        const struct header_ext_info *x, int depth, struct error **errp)
{
    json_t *b = json_object_get(opts, "backing");
    uint64_t off = be64_get(h + 8);
    uint32_t len = be32_get(h + 16);
    if (!off || (b && json_is_null(b))) {
        return 0;
    }
    if (b) {
        error_setg(errp, "option 'backing' supports only null (no backing file)");
        return -1;
    }
    if (len == 0 || len > 1023 || off > s->cluster_size || len > s->cluster_size - off) {
        error_setg(errp, "invalid backing file name (offset %#llx, length %u)",
                   (unsigned long long)off, len);
        return -1;
    }
    char name[1024];
    memcpy(name, h + off, len);
    name[len] = 0;
    if (memchr(name, 0, len)) {
        error_setg(errp, "invalid backing file name (contains a NUL byte)");
        return -1;
    }
    /* A relative name is relative to the directory of the image. */
    char path[4096];
    const char *slash = strrchr(s->node->filename, '/');
    if (name[0] != '/' && slash) {
        snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - s->node->filename), s->node->filename,
                 name);
    } else {
        snprintf(path, sizeof(path), "%s", name);
    }
    if (check_chain_loop(s, path, depth, errp) < 0) {
        error_prepend(errp, "backing file of '%s'", s->node->filename);
        return -1;
    }
    s->backing = block_open_backing(s->node, path, x->backing_fmt[0] ? x->backing_fmt : NULL,
                                    depth + 1, errp);
    if (!s->backing) {
        error_prepend(errp, "backing file of '%s'", s->node->filename);
        return -1;
    }
    return 0;
}

static void qcow2_free_state(struct qcow2_state *s)
{
    if (!s) {
        return;
    }
    qcow2_vmstate_close(s);
    block_node_close_private(s->backing);
    qcow2_cache_destroy(&s->l2_cache);
    qcow2_cache_destroy(&s->rb_cache);
    qcow2_free_snapshots(s->snaps, s->nb_snapshots);
    free(s->meta);
    free(s->l1);
    free(s->reftable);
    free(s->pending_drops);
    free(s->cbuf);
    free(s->dbuf);
    free(s);
}

/*
 * Clear autoclear bits we do not maintain: required before writing.  Valid
 * persistent bitmaps (bit 0) would be invalidated by that, so such images are
 * refused for writing instead of silently losing the user's bitmaps.
 */
static int clear_autoclear(struct qcow2_state *s, bool bitmaps, struct error **errp)
{
    if (s->node->read_only || s->version < 3 || s->autoclear == 0) {
        return 0;
    }
    if (bitmaps && (s->autoclear & 1)) {
        error_setg(errp,
                   "'%s' has persistent dirty bitmaps, which snapvm does not maintain; remove "
                   "them ('qemu-img bitmap --remove') or open the image read-only",
                   s->node->filename);
        return -1;
    }
    uint8_t z[8] = {0};
    if (qcow2_write_header_field(s, QCOW2_HDR_AUTOCLEAR, z, 8, errp) < 0 ||
        qcow2_barrier(s, errp) < 0) {
        return -1;
    }
    s->autoclear = 0;
    return 0;
}

static int load_l1(struct qcow2_state *s, struct error **errp)
{
    s->l1 = calloc(s->l1_size ? s->l1_size : 1, sizeof(uint64_t));
    if (!s->l1) {
        abort();
    }
    if (s->l1_size && qcow2_read_table(s, s->l1_offset, s->l1, s->l1_size, errp) < 0) {
        return -1;
    }
    uint64_t fsize = file_node_size(s->file);
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t off = s->l1[i] & L1E_OFFSET_MASK;
        if ((off & (s->cluster_size - 1)) || (off && off + s->cluster_size > fsize)) {
            error_setg(errp, "L1 entry %u points to an L2 table at %#llx outside the file", i,
                       (unsigned long long)off);
            return -1;
        }
    }
    return 0;
}

static int qcow2_open(struct block_node *node, json_t *opts, struct error **errp)
{
    const char *fn = node->filename;
    struct qcow2_state *s = calloc(1, sizeof(*s));
    if (!s) {
        abort();
    }
    s->node = node;
    s->file = node->file;
    json_t *depth_j = json_object_get(opts, "#depth");
    int depth = depth_j ? (int)json_integer_value(depth_j) : 0;
    uint64_t fsize = file_node_size(s->file);
    uint64_t hlen = fsize < (2u << 20) ? fsize : (2u << 20);
    uint8_t *h = calloc(1, hlen > 104 ? hlen : 104);
    struct header_ext_info x;
    memset(&x, 0, sizeof(x));
    if (!h) {
        abort();
    }
    if (hlen < 72) {
        error_setg(errp, "'%s' is not a qcow2 image (only %llu bytes)", fn,
                   (unsigned long long)fsize);
        goto fail;
    }
    if (qcow2_file_pread(s, 0, h, hlen, errp) < 0 || parse_header(s, h, hlen, fn, errp) < 0 ||
        check_tables(s, fsize, fn, errp) < 0) {
        goto fail;
    }
    uint64_t hdr_end = s->cluster_size < hlen ? s->cluster_size : hlen;
    uint64_t bf = be64_get(h + 8);
    if (bf && bf > s->header_length && bf < hdr_end) {
        hdr_end = bf;
    }
    if (parse_extensions(s, h, s->header_length, hdr_end, &x, errp) < 0 ||
        check_features(s, &x, fn, errp) < 0) {
        goto fail;
    }
    qcow2_cache_init(&s->l2_cache, "L2 table", L2_CACHE_ENTRIES);
    qcow2_cache_init(&s->rb_cache, "refcount block", RB_CACHE_ENTRIES);
    s->cbuf = malloc(s->cluster_size * 2 + 512);
    s->dbuf = malloc(s->cluster_size);
    if (!s->cbuf || !s->dbuf) {
        abort();
    }
    if (load_l1(s, errp) < 0 || qcow2_refcount_init(s, errp) < 0 ||
        qcow2_read_snapshots(s, errp) < 0 || open_backing(s, h, opts, &x, depth, errp) < 0 ||
        clear_autoclear(s, x.bitmaps, errp) < 0) {
        goto fail;
    }
    if (!node->read_only && (s->incompat & QCOW2_INCOMPAT_DIRTY)) {
        if (x.bitmaps) {
            error_setg(errp,
                       "'%s' was not closed cleanly and has persistent bitmaps, whose "
                       "clusters snapvm cannot count; repair it with 'qemu-img check -r all'",
                       fn);
            goto fail;
        }
        if (qcow2_repair_refcounts(s, errp) < 0) {
            goto fail;
        }
    } else if (!node->read_only && !x.bitmaps && !(s->incompat & QCOW2_INCOMPAT_CORRUPT)) {
        /* Reclaim clusters leaked by a kill or an I/O error (a save's
         * vmstate, a snapshot operation's cleanup), so that a clean
         * open + quit leaves an image that 'qemu-img check' finds clean.
         * Failing to do so only keeps the leaks: the open goes on. */
        struct error *err = NULL;
        uint64_t n = 0;
        if (qcow2_reclaim_leaks(s, &n, &err) < 0) {
            log_warn("'%s': leaked clusters not reclaimed: %s", fn, err->message);
            error_free(err);
        } else if (n) {
            log_info("'%s': reclaimed %llu leaked clusters", fn, (unsigned long long)n);
        }
    }
    s->free_hint = 0;
    free(h);
    node->opaque = s;
    return 0;
fail:
    free(h);
    qcow2_free_state(s);
    return -1;
}

static void qcow2_close(struct block_node *node)
{
    struct qcow2_state *s = node->opaque;
    if (s && s->txn) {
        log_warn("node '%s': closed with a snapshot operation in progress: undoing it", node->name);
        qcow2_txn_abort(node, s->txn, NULL);
    }
    if (s && !node->read_only) {
        qcow2_flush_deferred(s, NULL);
        qcow2_barrier(s, NULL); /* also applies the queued drops... */
        qcow2_barrier(s, NULL); /* ...which this makes durable */
    }
    qcow2_free_state(s);
    node->opaque = NULL;
}

static uint64_t qcow2_length(struct block_node *node)
{
    struct qcow2_state *s = node->opaque;
    return s->size;
}

static int qcow2_pread(struct block_node *node, uint64_t off, void *buf, size_t len,
                       struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    return qcow2_read_l1(s, s->l1, s->l1_size, off, buf, len, true, errp);
}

int qcow2_check_usable(struct qcow2_state *s, struct error **errp)
{
    if (s->broken) {
        error_setg(errp,
                   "node '%s': an I/O error left its metadata state unknown; it refuses "
                   "writes until the image is reopened",
                   s->node->name);
        return -1;
    }
    return 0;
}

int qcow2_check_writable(struct qcow2_state *s, struct error **errp)
{
    if (s->txn) {
        error_setg(errp, "node '%s' has a snapshot operation in progress", s->node->name);
        return -1;
    }
    return qcow2_check_usable(s, errp);
}

static int qcow2_pwrite(struct block_node *node, uint64_t off, const void *buf, size_t len,
                        struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (qcow2_check_writable(s, errp) < 0) {
        return -1;
    }
    return qcow2_write_active(s, off, buf, len, errp);
}

static int qcow2_flush(struct block_node *node, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (qcow2_flush_deferred(s, errp) < 0) {
        return -1;
    }
    return qcow2_barrier(s, errp);
}

static uint32_t qcow2_cluster_size(const struct block_node *node)
{
    const struct qcow2_state *s = node->opaque;
    return (uint32_t)s->cluster_size;
}

static struct block_node *qcow2_backing(const struct block_node *node)
{
    const struct qcow2_state *s = node->opaque;
    return s->backing;
}

const struct block_driver block_driver_qcow2 = {
        .name = "qcow2",
        .extra_opts = qcow2_opts,
        .open = qcow2_open,
        .close = qcow2_close,
        .length = qcow2_length,
        .pread = qcow2_pread,
        .pwrite = qcow2_pwrite,
        .flush = qcow2_flush,
        .cluster_size = qcow2_cluster_size,
        .backing = qcow2_backing,
        .snapshot_list = qcow2_snapshot_list,
        .snapshot_create = qcow2_snapshot_create,
        .snapshot_goto = qcow2_snapshot_goto,
        .snapshot_delete = qcow2_snapshot_delete,
        .snapshot_create_prepare = qcow2_snapshot_create_prepare,
        .snapshot_replace_prepare = qcow2_snapshot_replace_prepare,
        .snapshot_goto_prepare = qcow2_snapshot_goto_prepare,
        .snapshot_delete_prepare = qcow2_snapshot_delete_prepare,
        .txn_commit = qcow2_txn_commit,
        .txn_abort = qcow2_txn_abort,
        .txn_finish = qcow2_txn_finish,
        .vmstate_write = qcow2_vmstate_write,
        .vmstate_read = qcow2_vmstate_read,
        .vmstate_discard = qcow2_vmstate_discard,
        .vmstate_write_ram = qcow2_vmstate_write_ram,
        .vmstate_ram_wait = qcow2_vmstate_ram_wait,
        .vmstate_share = qcow2_vmstate_share,
        .vmstate_shares = qcow2_vmstate_shares,
        .snapshot_space = qcow2_snapshot_space,
        .snapshot_vmstate_read = qcow2_snapshot_vmstate_read,
        .snapshot_vmstate_map = qcow2_snapshot_vmstate_map,
        .header_ext_read = qcow2_header_ext_read,
        .header_ext_write = qcow2_header_ext_write,
};
