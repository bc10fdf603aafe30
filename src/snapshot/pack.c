/*
 * Packed RAM clusters (see pack.h): the pack map in memory, its encoding,
 * its checks when a load reads it, and reading guest RAM through it.
 */
#include "snapshot/pack.h"

#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "snapshot/vmstate.h"
#include "util/buf.h"

#define PAGE       VMSTATE_PAGE_SIZE
#define READ_SLOTS 1024u /* slots read at a time: 4 MiB of buffer */

static void *zalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
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

static bool present(const struct ram_packs *p, uint64_t page)
{
    return p->present[page / 64] >> (page % 64) & 1;
}

/* Pages of cluster c: [*first, *end). */
static void cluster_pages(const struct ram_packs *p, uint64_t c, uint64_t *first, uint64_t *end)
{
    *first = c * p->unit;
    *end = *first + p->unit < p->pages ? *first + p->unit : p->pages;
}

void ram_packs_unpack(struct ram_packs *p, uint64_t c)
{
    if (!p || !p->index[c]) {
        return;
    }
    uint64_t a, b;
    cluster_pages(p, c, &a, &b);
    for (uint64_t i = a; i < b; i++) {
        p->present[i / 64] &= ~(1ull << (i % 64));
    }
    p->index[c] = 0;
    p->packed--;
}

uint8_t *ram_packs_encode(const struct ram_packs *p, uint64_t *len)
{
    uint64_t words = (p->pages + 63) / 64;
    *len = vmstate_map_size(p->pages * PAGE, p->unit);
    uint8_t *out = zalloc(1, *len);
    for (uint64_t c = 0; c < p->nclusters; c++) {
        le_put(out + c * 4, p->index[c], 4);
    }
    for (uint64_t w = 0; w < words; w++) {
        le_put(out + p->nclusters * 4 + w * 8, p->present[w], 8);
    }
    return out;
}

void ram_packs_header(const struct ram_packs *p, uint64_t ram_size, struct vmstate_header *h,
                      const uint8_t *map)
{
    h->pack_offset = p->offset;
    h->pack_pages = p->slots;
    h->pack_unit = p->unit;
    h->map_offset = p->offset + p->slots * PAGE;
    h->map_size = vmstate_map_size(ram_size, p->unit);
    h->map_crc = vmstate_crc32(map, h->map_size);
}

/* Every packed cluster's slots inside the area, and no page bit anywhere else. */
static int check_map(struct ram_packs *p, const char *where, struct error **errp)
{
    for (uint64_t c = 0; c < p->nclusters; c++) {
        uint64_t a, b, n = 0;
        cluster_pages(p, c, &a, &b);
        for (uint64_t i = a; i < b; i++) {
            n += present(p, i);
        }
        if (!p->index[c] && n) {
            error_setg(errp,
                       "%s: vmstate pack map gives pages of cluster %llu (guest RAM 0x%llx) "
                       "slots, but the cluster is not packed (the vmstate is corrupt)",
                       where, (unsigned long long)c, (unsigned long long)(a * PAGE));
            return -1;
        }
        if (p->index[c] && p->index[c] - 1u + n > p->slots) {
            error_setg(errp,
                       "%s: vmstate pack map puts cluster %llu (guest RAM 0x%llx) at slots "
                       "%llu+%llu, past the pack area (%llu slots; the vmstate is corrupt)",
                       where, (unsigned long long)c, (unsigned long long)(a * PAGE),
                       (unsigned long long)(p->index[c] - 1u), (unsigned long long)n,
                       (unsigned long long)p->slots);
            return -1;
        }
        p->packed += p->index[c] != 0;
    }
    uint64_t tail = p->pages % 64;
    if (tail && p->present[p->pages / 64] >> tail) {
        error_setg(errp,
                   "%s: vmstate pack map has pages past the end of RAM (the vmstate is "
                   "corrupt)",
                   where);
        return -1;
    }
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
    for (uint64_t c = 0; c < p->nclusters; c++) {
        p->index[c] = (uint32_t)le_get(map + c * 4, 4);
    }
    for (uint64_t w = 0; w < (p->pages + 63) / 64; w++) {
        p->present[w] = le_get(map + p->nclusters * 4 + w * 8, 8);
    }
    if (check_map(p, where, errp) < 0) {
        ram_packs_free(p);
        return -1;
    }
    *out = p;
    return 0;
}

int ram_packs_read(struct block_node *node, const char *tag, const struct vmstate_header *h,
                   const char *where, struct ram_packs **out, struct error **errp)
{
    *out = NULL;
    if (!h->map_size) {
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
            uint64_t a, b, n = 0, s = p->index[e] - 1u;
            cluster_pages(p, e, &a, &b);
            for (uint64_t i = a; i < b; i++) {
                n += present(p, i);
            }
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
                bool has = present(p, i);
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
                r.buf = malloc((size_t)READ_SLOTS * PAGE);
                if (!r.buf) {
                    abort();
                }
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

static void extent_push(struct block_extent **v, size_t *n, size_t *cap, struct block_extent e)
{
    struct block_extent *last = *n ? &(*v)[*n - 1] : NULL;
    if (last && last->kind == e.kind && last->pos + last->len == e.pos &&
        (e.kind != BLOCK_EXTENT_DATA || last->host_offset + last->len == e.host_offset)) {
        last->len += e.len;
        return;
    }
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *v = realloc(*v, *cap * sizeof(**v));
        if (!*v) {
            abort();
        }
    }
    (*v)[(*n)++] = e;
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
        while (a < end) {
            uint64_t c = a / span, b = (c + 1) * span < end ? (c + 1) * span : end;
            struct block_extent piece = *e;
            piece.pos = ram_offset + a;
            piece.len = b - a;
            if (c < p->nclusters && p->index[c]) {
                piece.kind = BLOCK_EXTENT_UNMAPPABLE;
                piece.host_offset = 0;
            } else if (e->kind == BLOCK_EXTENT_DATA) {
                piece.host_offset = e->host_offset + (a - (e->pos - ram_offset));
            }
            extent_push(&out, &m, &cap, piece);
            a = b;
        }
    }
    free(*ext);
    *ext = out;
    *n = m;
}
