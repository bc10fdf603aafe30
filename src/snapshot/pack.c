/*
 * Packed RAM clusters (see pack.h): the pack map in memory, its encoding,
 * its checks when a load reads it, and reading guest RAM through it.
 */
#include "snapshot/pack.h"

#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "snapshot/vmstate.h"
#include "util/bitmap.h"
#include "util/buf.h"

#define PAGE       VMSTATE_PAGE_SIZE
#define READ_SLOTS 1024u /* slots read at a time: 4 MiB of buffer */

static void *zalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        abort(); /* snapvm's policy: out of memory aborts */
    }
    return p;
}

struct ram_packs *ram_packs_new(uint64_t ram_size, uint32_t unit)
{
    struct ram_packs *p = zalloc(1, sizeof(*p));
    p->pages = ram_size / PAGE;
    p->unit = unit;
    p->nclusters = (p->pages + unit - 1) / unit;
    p->offset = vmstate_pack_offset(ram_size);
    p->index = zalloc(p->nclusters, sizeof(*p->index));
    p->present = zalloc((p->pages + 63) / 64, sizeof(*p->present));
    return p;
}

void ram_packs_free(struct ram_packs *p)
{
    if (p) {
        free(p->index);
        free(p->present);
        free(p);
    }
}

/* Pages of cluster c: [*first, *end). */
static void cluster_pages(const struct ram_packs *p, uint64_t c, uint64_t *first, uint64_t *end)
{
    *first = c * p->unit;
    *end = *first + p->unit < p->pages ? *first + p->unit : p->pages;
}

/* Slots of cluster c (its pages with a bit set). */
static uint64_t cluster_slots(const struct ram_packs *p, uint64_t c)
{
    uint64_t a, b;
    cluster_pages(p, c, &a, &b);
    return bitmap_count(p->present, a, b, false);
}

void ram_packs_unpack(struct ram_packs *p, uint64_t c)
{
    if (!p || !p->index[c]) {
        return;
    }
    uint64_t a, b;
    cluster_pages(p, c, &a, &b);
    bitmap_assign(p->present, a, b, false);
    p->index[c] = 0;
    p->packed--;
}

/*
 * The map's entries, one per packed cluster in cluster order: u32 cluster,
 * u32 first slot, then its pages' bits in u64 words (bit i of word k: page
 * 64 * k + i of the cluster).  Why a list rather than a table over all of
 * RAM: every load reads and checks the whole map before the pause, and a
 * table over 8 GiB was 768 KiB and 3-4 ms of every load and revert, for a
 * guest with a handful of packed clusters.
 */
static uint64_t mask_words(const struct ram_packs *p)
{
    return (p->unit + 63) / 64;
}

/* Word k of cluster c's bits, from the page bitmap (0 past the end of RAM). */
static uint64_t mask_get(const struct ram_packs *p, uint64_t c, uint64_t k)
{
    uint64_t first = c * p->unit + 64 * k, words = (p->pages + 63) / 64;
    if (first / 64 >= words) {
        return 0;
    }
    uint64_t w = p->present[first / 64];
    return p->unit >= 64 ? w : w >> (first % 64) & ((1ull << p->unit) - 1);
}

uint8_t *ram_packs_encode(const struct ram_packs *p, uint64_t *len)
{
    uint64_t esz = vmstate_map_entry_size(p->unit), n = 0;
    *len = p->packed * esz;
    uint8_t *out = zalloc(1, *len);
    for (uint64_t c = 0; c < p->nclusters && n < p->packed; c++) {
        if (!p->index[c]) {
            continue;
        }
        uint8_t *e = out + n++ * esz;
        le_put(e, c, 4);
        le_put(e + 4, p->index[c] - 1u, 4);
        for (uint64_t k = 0; k < mask_words(p); k++) {
            le_put(e + 8 + 8 * k, mask_get(p, c, k), 8);
        }
    }
    return out;
}

void ram_packs_header(const struct ram_packs *p, struct vmstate_header *h, const uint8_t *map,
                      uint64_t len)
{
    h->pack_offset = p->offset;
    h->pack_pages = p->slots;
    h->pack_unit = p->unit;
    h->map_offset = p->offset + p->slots * PAGE;
    h->map_size = len;
    h->map_crc = vmstate_crc32(map, len);
}

/*
 * One entry into the map: in cluster order, its bits on pages of RAM, its
 * slots inside the area.
 */
static int decode_entry(struct ram_packs *p, const uint8_t *e, uint64_t i, uint64_t *next,
                        const char *where, struct error **errp)
{
    uint64_t c = le_get(e, 4), slot = le_get(e + 4, 4), n = 0;
    if (c < *next || c >= p->nclusters) {
        error_setg(errp,
                   "%s: vmstate pack map entry %llu names cluster %llu, %s (the vmstate is "
                   "corrupt)",
                   where, (unsigned long long)i, (unsigned long long)c,
                   c >= p->nclusters ? "past the end of RAM" : "out of order");
        return -1;
    }
    *next = c + 1;
    for (uint64_t k = 0; k < mask_words(p); k++) {
        uint64_t m = le_get(e + 8 + 8 * k, 8), first = c * p->unit + 64 * k;
        /* Bits of pages that exist: of this cluster, and of RAM. */
        uint64_t room = p->unit - 64 * k < 64 ? p->unit - 64 * k : 64;
        room = first >= p->pages ? 0 : p->pages - first < room ? p->pages - first : room;
        if (room < 64 && m >> room) {
            error_setg(errp,
                       "%s: vmstate pack map gives cluster %llu pages past its end or past the "
                       "end of RAM (the vmstate is corrupt)",
                       where, (unsigned long long)c);
            return -1;
        }
        if (m) {
            p->present[first / 64] |= p->unit >= 64 ? m : m << (first % 64);
        }
        n += (uint64_t)__builtin_popcountll(m);
    }
    if (slot + n > p->slots || slot + 1 > UINT32_MAX) {
        error_setg(errp,
                   "%s: vmstate pack map puts cluster %llu (guest RAM 0x%llx) at slots "
                   "%llu+%llu, past the pack area (%llu slots; the vmstate is corrupt)",
                   where, (unsigned long long)c, (unsigned long long)(c * p->unit * PAGE),
                   (unsigned long long)slot, (unsigned long long)n, (unsigned long long)p->slots);
        return -1;
    }
    p->index[c] = (uint32_t)(slot + 1);
    p->packed++;
    return 0;
}

int ram_packs_decode(const uint8_t *map, const struct vmstate_header *h, const char *where,
                     struct ram_packs **out, struct error **errp)
{
    *out = NULL;
    if (vmstate_crc32(map, h->map_size) != h->map_crc) {
        error_setg(errp, "%s: vmstate pack map checksum mismatch (the vmstate is corrupt)", where);
        return -1;
    }
    struct ram_packs *p = ram_packs_new(h->ram_size, h->pack_unit);
    p->slots = h->pack_pages;
    uint64_t esz = vmstate_map_entry_size(p->unit), next = 0;
    for (uint64_t i = 0; i < h->map_size / esz; i++) {
        if (decode_entry(p, map + i * esz, i, &next, where, errp) < 0) {
            ram_packs_free(p);
            return -1;
        }
    }
    *out = p;
    return 0;
}

int ram_packs_read(struct block_node *node, const char *tag, const struct vmstate_header *h,
                   const char *where, struct ram_packs **out, struct error **errp)
{
    *out = NULL;
    if (!h->pack_unit) {
        return 0;
    }
    uint8_t *map = zalloc(1, h->map_size);
    int rc = block_snapshot_vmstate_read(node, tag, h->map_offset, map, h->map_size, errp);
    if (rc == 0) {
        rc = ram_packs_decode(map, h, where, out, errp);
    }
    free(map);
    return rc;
}

void ram_packs_stored(const struct ram_packs *p, uint64_t *map)
{
    for (uint64_t c = 0; p && p->packed && c < p->nclusters; c++) {
        if (p->index[c]) {
            uint64_t a, b;
            cluster_pages(p, c, &a, &b);
            for (uint64_t i = a; i < b; i++) {
                bitmap_assign(map, i, i + 1, bitmap_test(p->present, i));
            }
        }
    }
}

/* ---- reading guest RAM through the map ---- */

struct pack_reader {
    struct block_node *node;
    const char *tag;
    const struct ram_packs *p;
    uint8_t *dst;    /* where page lo goes */
    uint64_t lo, hi; /* the pages asked for */
    uint8_t *buf;    /* READ_SLOTS slots */
};

static int read_slots(struct pack_reader *r, uint64_t slot, uint64_t n, struct error **errp)
{
    return block_snapshot_vmstate_read(r->node, r->tag, r->p->offset + slot * PAGE, r->buf,
                                       n * PAGE, errp);
}

/*
 * Packed clusters [c0, c1) into their pages of the range.  Their slots
 * follow each other in cluster order (a save packs in that order), so a
 * run of them is read in one go, a few dead slots between included.
 */
static int read_packed(struct pack_reader *r, uint64_t c0, uint64_t c1, struct error **errp)
{
    const struct ram_packs *p = r->p;
    uint64_t c = c0;
    while (c < c1) {
        uint64_t s0 = p->index[c] - 1u, s1 = s0, e = c;
        /* Extend while the next cluster's slots lie just past (holes of < a cluster). */
        while (e < c1) {
            uint64_t n = cluster_slots(p, e), s = p->index[e] - 1u;
            /* (The first always fits: a cluster has at most 512 pages.) */
            if (e > c && (s < s1 || s > s1 + p->unit || s + n - s0 > READ_SLOTS)) {
                break;
            }
            s1 = s + n;
            e++;
        }
        if (s1 > s0 && read_slots(r, s0, s1 - s0, errp) < 0) {
            return -1;
        }
        for (; c < e; c++) {
            uint64_t a, b, slot = p->index[c] - 1u - s0;
            cluster_pages(p, c, &a, &b);
            for (uint64_t i = a; i < b; i++) {
                bool has = bitmap_test(p->present, i);
                if (i >= r->lo && i < r->hi) {
                    uint8_t *to = r->dst + (i - r->lo) * PAGE;
                    if (has) {
                        memcpy(to, r->buf + slot * PAGE, PAGE);
                    } else {
                        memset(to, 0, PAGE);
                    }
                }
                slot += has;
            }
        }
    }
    return 0;
}

int ram_read(struct block_node *node, const char *tag, uint64_t ram_offset,
             const struct ram_packs *p, uint64_t off, uint64_t len, uint8_t *dst,
             struct error **errp)
{
    if (!p || !p->packed) {
        return block_snapshot_vmstate_read(node, tag, ram_offset + off, dst, len, errp);
    }
    struct pack_reader r = {.node = node,
                            .tag = tag,
                            .p = p,
                            .dst = dst,
                            .lo = off / PAGE,
                            .hi = (off + len) / PAGE};
    int rc = 0;
    /* Alternate stretches of clusters in place (one read) and packed ones. */
    for (uint64_t c = r.lo / p->unit; rc == 0 && c * p->unit < r.hi;) {
        bool packed = p->index[c] != 0;
        uint64_t e = c + 1;
        while (e * p->unit < r.hi && (p->index[e] != 0) == packed) {
            e++;
        }
        if (packed) {
            if (!r.buf) {
                r.buf = zalloc(READ_SLOTS, PAGE);
            }
            rc = read_packed(&r, c, e, errp);
        } else {
            uint64_t a = c * p->unit > r.lo ? c * p->unit : r.lo;
            uint64_t b = e * p->unit < r.hi ? e * p->unit : r.hi;
            rc = block_snapshot_vmstate_read(node, tag, ram_offset + a * PAGE,
                                             dst + (a - r.lo) * PAGE, (b - a) * PAGE, errp);
        }
        c = e;
    }
    free(r.buf);
    return rc;
}

void ram_packs_mark(const struct ram_packs *p, uint64_t ram_offset, struct block_extent **ext,
                    size_t *n)
{
    if (!p || !p->packed) {
        return;
    }
    struct block_extent *out = NULL;
    size_t m = 0, cap = 0;
    uint64_t span = (uint64_t)p->unit * PAGE;
    for (size_t i = 0; i < *n; i++) {
        const struct block_extent *e = &(*ext)[i];
        uint64_t a = e->pos - ram_offset, end = a + e->len;
        /* Stretches of clusters alike (packed or not): one piece each. */
        while (a < end) {
            uint64_t c = a / span;
            bool packed = c < p->nclusters && p->index[c];
            uint64_t b = (c + 1) * span;
            while (b < end && (b / span < p->nclusters && p->index[b / span]) == packed) {
                b += span;
            }
            b = b < end ? b : end;
            struct block_extent piece = *e;
            piece.pos = ram_offset + a;
            piece.len = b - a;
            if (packed) {
                piece.kind = BLOCK_EXTENT_UNMAPPABLE;
                piece.host_offset = 0;
            } else if (e->kind == BLOCK_EXTENT_DATA) {
                piece.host_offset = e->host_offset + (a - (e->pos - ram_offset));
            }
            block_extent_append(&out, &m, &cap, piece);
            a = b;
        }
    }
    free(*ext);
    *ext = out;
    *n = m;
}
