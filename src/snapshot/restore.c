/*
 * Instant restore (see restore.h): staging a snapshot's RAM beside guest
 * memory (a plan of the clusters to map, and everything that must be read,
 * read into a staging area), putting it in place, reverting in place (only
 * the pages changed since the snapshot), and turning mapped pages into
 * private memory before the snapshot can go away.
 */
#include "snapshot/restore.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "block/block.h"
#include "machine/machine.h"
#include "snapshot/pack.h"
#include "snapshot/ram.h"
#include "snapshot/vmstate.h"
#include "util/bitmap.h"
#include "util/log.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PAGE VMSTATE_PAGE_SIZE

/*
 * Each mapped run becomes a mapping of its own (and splits the one around
 * it): stay well below the kernel's vm.max_map_count, leaving room for
 * everything else the process maps.
 */
static size_t max_mapped_runs(void)
{
    unsigned long max = 65530; /* the kernel's default */
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f) {
        if (fscanf(f, "%lu", &max) != 1) {
            max = 65530;
        }
        fclose(f);
    }
    return max > 8192 ? (max - 4096) / 2 : 0;
}

/*
 * What guest RAM maps from where, per machine.  It belongs to this layer
 * (the machine only owns the memory), under its own lock: a load replaces
 * it while a delete may look at it.  An entry lives from a machine's first
 * restore until vm_snapshot_forget().
 */
struct mapped_run {
    uint64_t off, len; /* in guest RAM */
    uint64_t host;     /* where it lies in the image file */
};

struct ram_mapping {
    struct machine *m;
    struct block_node *node; /* NULL: nothing is mapped */
    char snapshot_id[128];
    struct mapped_run *ranges; /* ascending in guest RAM */
    size_t nr_ranges, ranges_cap;
    struct ram_mapping *next;
};

static pthread_mutex_t mappings_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ram_mapping *mappings;

/* Called with mappings_lock held. */
static struct ram_mapping *mapping_of(struct machine *m, bool create)
{
    for (struct ram_mapping *p = mappings; p; p = p->next) {
        if (p->m == m) {
            return p;
        }
    }
    if (!create) {
        return NULL;
    }
    struct ram_mapping *p = calloc(1, sizeof(*p));
    if (!p) {
        abort();
    }
    p->m = m;
    p->next = mappings;
    mappings = p;
    return p;
}

bool restore_ram_is_anonymous(struct machine *m)
{
    pthread_mutex_lock(&mappings_lock);
    struct ram_mapping *map = mapping_of(m, false);
    bool mapped = map && map->nr_ranges > 0;
    pthread_mutex_unlock(&mappings_lock);
    return machine_ram_is_private(m) && !mapped;
}

void restore_forget(struct machine *m)
{
    pthread_mutex_lock(&mappings_lock);
    for (struct ram_mapping **pp = &mappings; *pp; pp = &(*pp)->next) {
        if ((*pp)->m == m) {
            struct ram_mapping *p = *pp;
            *pp = p->next;
            free(p->ranges);
            free(p);
            break;
        }
    }
    pthread_mutex_unlock(&mappings_lock);
}

static bool page_aligned(uint64_t v)
{
    return v % PAGE == 0;
}

static void mapping_reset(struct ram_mapping *map)
{
    free(map->ranges);
    map->ranges = NULL;
    map->nr_ranges = map->ranges_cap = 0;
    map->node = NULL;
    map->snapshot_id[0] = 0;
}

/*
 * Room for element n of a growing array of `size`-byte elements (*cap of
 * them allocated): the capacity doubles; out of memory aborts, as every
 * allocation of snapvm's does.
 */
static void *room_for(void *v, size_t n, size_t *cap, size_t size)
{
    if (n < *cap) {
        return v;
    }
    *cap = *cap ? 2 * *cap : 16;
    v = realloc(v, *cap * size);
    if (!v) {
        abort();
    }
    return v;
}

static void mapping_add(struct ram_mapping *map, uint64_t offset, uint64_t len, uint64_t host)
{
    map->ranges = room_for(map->ranges, map->nr_ranges, &map->ranges_cap, sizeof(*map->ranges));
    map->ranges[map->nr_ranges++] = (struct mapped_run){.off = offset, .len = len, .host = host};
}

/*
 * Can this DATA extent be mapped straight from the image file?  A page-
 * aligned run of clusters of at least a page can; a compressed cluster, a
 * cluster smaller than a page, or RAM that is a shared file cannot.
 */
static bool extent_mappable(const struct ram_stage *st, const struct block_extent *e)
{
    return st->fd >= 0 && e->kind == BLOCK_EXTENT_DATA && page_aligned(e->pos - st->ram_offset) &&
           page_aligned(e->len) && page_aligned(e->host_offset);
}

void restore_stage_free(struct ram_stage *st)
{
    if (st->buf && st->buf != MAP_FAILED) {
        munmap(st->buf, st->ram_size);
    }
    st->buf = NULL;
    free(st->extents);
    st->extents = NULL;
    free(st->mapped);
    st->mapped = NULL;
    free(st->pieces);
    st->pieces = NULL;
    st->npieces = st->pieces_cap = 0;
    if (st->parked) {
        munmap(st->parked, st->parked_len);
        st->parked = NULL;
        st->parked_len = 0;
    }
}

/* Read the snapshot's RAM at vmstate [pos, pos + len) into the staging buffer. */
static int stage_read(struct ram_stage *st, uint64_t pos, uint64_t len, struct error **errp)
{
    uint64_t off = pos - st->ram_offset;
    if (ram_read(st->node, st->tag, st->ram_offset, st->packs, off, len, st->buf + off, errp) < 0) {
        error_prepend(errp, "reading guest RAM at 0x%llx from node '%s'", (unsigned long long)off,
                      block_node_name(st->node));
        return -1;
    }
    return 0;
}

/*
 * Where the image file is tmpfs, reading a hole through a mapping allocates
 * a page of the file system (on disk file systems it only fills the page
 * cache): a zero page the guest reads would take tmpfs space, and on a full
 * tmpfs the guest would fault for ever.  There, the holes inside the RAM
 * clusters (a save lays out all-zero clusters as holes, qcow2-vmstate.c)
 * stay fresh anonymous zero pages: only the data between them is mapped.
 */
static bool reads_of_holes_allocate(int fd)
{
    struct statfs sf;
    return fstatfs(fd, &sf) == 0 && sf.f_type == TMPFS_MAGIC;
}

static void extent_add(struct block_extent **v, size_t *n, size_t *cap, struct block_extent e)
{
    *v = room_for(*v, *n, cap, sizeof(**v));
    (*v)[(*n)++] = e;
}

/* Split every mappable DATA extent into its data (DATA) and its holes (ZERO). */
static int split_at_holes(struct ram_stage *st, struct error **errp)
{
    struct block_extent *out = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < st->count; i++) {
        struct block_extent e = st->extents[i];
        if (!extent_mappable(st, &e)) {
            extent_add(&out, &n, &cap, e);
            continue;
        }
        uint64_t at = e.host_offset, end = e.host_offset + e.len;
        while (at < end) {
            off_t d = lseek(st->fd, (off_t)at, SEEK_DATA);
            if (d < 0 && errno != ENXIO) {
                free(out);
                error_setg_errno(errp, errno, "node '%s': looking for holes in the image file",
                                 block_node_name(st->node));
                return -1;
            }
            uint64_t data = d < 0 || (uint64_t)d > end ? end : (uint64_t)d / PAGE * PAGE;
            if (data > at) {
                extent_add(&out, &n, &cap,
                           (struct block_extent){.pos = e.pos + (at - e.host_offset),
                                                 .len = data - at,
                                                 .kind = BLOCK_EXTENT_ZERO});
                at = data;
            }
            if (at == end) {
                break;
            }
            off_t h = lseek(st->fd, (off_t)at, SEEK_HOLE);
            uint64_t hole =
                    h < 0 || (uint64_t)h > end ? end : ((uint64_t)h + PAGE - 1) / PAGE * PAGE;
            hole = hole > end ? end : hole;
            extent_add(&out, &n, &cap,
                       (struct block_extent){.pos = e.pos + (at - e.host_offset),
                                             .len = hole - at,
                                             .host_offset = at,
                                             .kind = BLOCK_EXTENT_DATA});
            at = hole;
        }
    }
    free(st->extents);
    st->extents = out;
    st->count = n;
    return 0;
}

/* The mapping plan, with every extent read that cannot be mapped. */
static int stage_extents(struct ram_stage *st, struct error **errp)
{
    struct stat sb;
    if (fstat(st->fd, &sb) < 0) {
        error_setg_errno(errp, errno, "node '%s': cannot stat the image file",
                         block_node_name(st->node));
        return -1;
    }
    st->mapped = calloc(st->count ? st->count : 1, sizeof(*st->mapped));
    if (!st->mapped) {
        abort();
    }
    bool any_mapped = false;
    for (size_t i = 0; i < st->count; i++) {
        const struct block_extent *e = &st->extents[i];
        if (e->kind == BLOCK_EXTENT_ZERO) {
            continue;
        }
        /*
         * A mapped page past the end of the file would fault (SIGBUS, or
         * a vCPU stuck on a page KVM cannot fill) only when the guest
         * touches it: refuse such an image now, before anything changes.
         */
        if (e->kind == BLOCK_EXTENT_DATA && (e->host_offset > (uint64_t)sb.st_size ||
                                             e->len > (uint64_t)sb.st_size - e->host_offset)) {
            error_setg(errp,
                       "node '%s': snapshot '%s' stores guest RAM at 0x%llx at file offset "
                       "0x%llx, past the end of the image file (%llu bytes): the image is corrupt",
                       block_node_name(st->node), st->tag,
                       (unsigned long long)(e->pos - st->ram_offset),
                       (unsigned long long)e->host_offset, (unsigned long long)sb.st_size);
            return -1;
        }
        if (extent_mappable(st, e)) {
            st->mapped[i] = true;
            any_mapped = true;
        } else if (stage_read(st, e->pos, e->len, errp) < 0) {
            return -1;
        }
    }
    /* Nothing to map (all of RAM packed, say): the staging area is RAM as it is. */
    st->whole = !any_mapped;
    return 0;
}

static int stage_init(struct machine *m, struct block_node *node, const char *tag, const char *id,
                      uint64_t ram_offset, const struct ram_packs *packs, struct ram_stage *st,
                      struct error **errp)
{
    memset(st, 0, sizeof(*st));
    machine_ram(m, &st->ram_size);
    st->node = node;
    st->packs = packs;
    st->tag = tag;
    snprintf(st->id, sizeof(st->id), "%s", id);
    st->ram_offset = ram_offset;
    st->fd = machine_ram_is_private(m) ? block_node_host_fd(node) : -1;
    /*
     * The staging area: as large as RAM, but only what is read into it
     * takes memory (MAP_NORESERVE, untouched pages are never allocated).
     */
    st->buf = mmap(NULL, st->ram_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (st->buf == MAP_FAILED) {
        st->buf = NULL;
        error_setg_errno(errp, errno, "cannot reserve %llu bytes to stage guest RAM",
                         (unsigned long long)st->ram_size);
        return -1;
    }
    return 0;
}

int restore_stage(struct machine *m, struct block_node *node, const char *tag, const char *id,
                  uint64_t ram_offset, const struct ram_packs *packs, struct ram_stage *st,
                  struct error **errp)
{
    if (stage_init(m, node, tag, id, ram_offset, packs, st, errp) < 0) {
        return -1;
    }
    int rc;
    bool plan = st->fd >= 0 &&
                block_snapshot_vmstate_map(node, tag, ram_offset, st->ram_size, &st->extents,
                                           &st->count, NULL) == 0 &&
                (!reads_of_holes_allocate(st->fd) || split_at_holes(st, NULL) == 0);
    if (plan) {
        ram_packs_mark(packs, ram_offset, &st->extents, &st->count); /* packed: read */
    }
    if (plan && st->count <= max_mapped_runs()) {
        rc = stage_extents(st, errp);
    } else {
        /* Read it all: RAM is a shared file (-mem-path), or too many runs. */
        free(st->extents);
        st->extents = NULL;
        st->count = 0;
        st->whole = true;
        rc = ram_load(node, tag, ram_offset, packs, st->buf, st->ram_size, errp);
    }
    if (rc < 0) {
        restore_stage_free(st);
    }
    return rc;
}

/* ---- revert in place ---- */

#define LOOKUP_GAP (1u << 20)  /* changed runs closer than this share one extent lookup */
#define READ_GAP   (64u << 10) /* and one read (the pages between are read for nothing) */

static void piece_add(struct ram_stage *st, uint64_t off, uint64_t len,
                      enum restore_piece_kind kind, uint64_t host)
{
    struct restore_piece *last = st->npieces ? &st->pieces[st->npieces - 1] : NULL;
    if (last && last->kind == kind && last->off + last->len == off &&
        (kind != RESTORE_FILE || last->host + last->len == host)) {
        last->len += len;
        return;
    }
    st->pieces = room_for(st->pieces, st->npieces, &st->pieces_cap, sizeof(*st->pieces));
    st->pieces[st->npieces++] =
            (struct restore_piece){.off = off, .len = len, .host = host, .kind = kind};
}

/*
 * What guest RAM maps from the image, as far as a revert to snapshot `id`
 * on `node` may use it: a copy of the runs (ascending) if this very
 * snapshot's load mapped them, else none.  *anon_elsewhere: whether every
 * page outside those runs is anonymous memory, which MADV_DONTNEED turns
 * into zeros (not so where another snapshot's runs are still mapped, nor for
 * -mem-path RAM).  Nothing changes the record meanwhile: loads and deletes
 * hold the machine's snapshot slot.
 */
static struct mapped_run *mapped_runs(struct machine *m, struct block_node *node, const char *id,
                                      size_t *n, bool *anon_elsewhere)
{
    struct mapped_run *copy = NULL;
    *n = 0;
    pthread_mutex_lock(&mappings_lock);
    struct ram_mapping *map = mapping_of(m, false);
    bool mine = map && map->node == node && strcmp(map->snapshot_id, id) == 0;
    *anon_elsewhere = machine_ram_is_private(m) && (!map || map->nr_ranges == 0 || mine);
    if (mine && map->nr_ranges) {
        copy = malloc(map->nr_ranges * sizeof(*copy));
        if (!copy) {
            abort();
        }
        memcpy(copy, map->ranges, map->nr_ranges * sizeof(*copy));
        *n = map->nr_ranges;
    }
    pthread_mutex_unlock(&mappings_lock);
    return copy;
}

/* Reads into the staging area, neighbours merged into one. */
struct stage_reads {
    struct ram_stage *st;
    uint64_t lo, hi; /* pending, in guest RAM; lo == hi: none */
};

static int reads_flush(struct stage_reads *r, struct error **errp)
{
    int rc = r->hi > r->lo ? stage_read(r->st, r->st->ram_offset + r->lo, r->hi - r->lo, errp) : 0;
    r->lo = r->hi = 0;
    return rc;
}

static int reads_add(struct stage_reads *r, uint64_t off, uint64_t len, struct error **errp)
{
    if (r->hi > r->lo && off <= r->hi + READ_GAP) {
        r->hi = off + len > r->hi ? off + len : r->hi;
        return 0;
    }
    if (reads_flush(r, errp) < 0) {
        return -1;
    }
    r->lo = off;
    r->hi = off + len;
    return 0;
}

/*
 * Changed runs [need[2i], +need[2i+1]) outside this snapshot's mapped runs:
 * what the snapshot stores there, one extent lookup per span of nearby runs.
 */
static int stage_lookups(struct ram_stage *st, const uint64_t *need, size_t nneed,
                         bool anon_elsewhere, struct error **errp)
{
    struct stage_reads reads = {.st = st};
    for (size_t i = 0; i < nneed;) {
        size_t j = i + 1;
        while (j < nneed && need[2 * j] <= need[2 * (j - 1)] + need[2 * (j - 1) + 1] + LOOKUP_GAP) {
            j++;
        }
        uint64_t s0 = need[2 * i], s1 = need[2 * (j - 1)] + need[2 * (j - 1) + 1];
        struct block_extent *ext = NULL;
        size_t n = 0;
        if (block_snapshot_vmstate_map(st->node, st->tag, st->ram_offset + s0, s1 - s0, &ext, &n,
                                       errp) < 0) {
            error_prepend(errp, "looking up guest RAM at 0x%llx in snapshot '%s' on node '%s'",
                          (unsigned long long)s0, st->tag, block_node_name(st->node));
            return -1;
        }
        ram_packs_mark(st->packs, st->ram_offset, &ext, &n); /* packed: read, never zero */
        size_t e = 0;
        for (size_t k = i; k < j; k++) {
            uint64_t a = need[2 * k], b = a + need[2 * k + 1];
            while (a < b) {
                while (e < n && ext[e].pos - st->ram_offset + ext[e].len <= a) {
                    e++;
                }
                if (e == n) { /* the extents cover the span exactly: cannot happen */
                    free(ext);
                    error_setg(errp, "node '%s': no extent for guest RAM at 0x%llx",
                               block_node_name(st->node), (unsigned long long)a);
                    return -1;
                }
                uint64_t end = ext[e].pos - st->ram_offset + ext[e].len;
                end = end < b ? end : b;
                if (ext[e].kind == BLOCK_EXTENT_ZERO) {
                    piece_add(st, a, end - a, anon_elsewhere ? RESTORE_ZERO : RESTORE_COPY, 0);
                } else {
                    piece_add(st, a, end - a, RESTORE_COPY, 0);
                    if (reads_add(&reads, a, end - a, errp) < 0) {
                        free(ext);
                        return -1;
                    }
                }
                a = end;
            }
        }
        free(ext);
        i = j;
    }
    return reads_flush(&reads, errp);
}

int restore_stage_changed(struct machine *m, struct block_node *node, const char *tag,
                          const char *id, uint64_t ram_offset, const struct ram_packs *packs,
                          const uint64_t *changed, struct ram_stage *st, struct error **errp)
{
    uint64_t ram_size, n = 0;
    machine_ram(m, &ram_size);
    for (size_t i = 0; i < (ram_size / PAGE + 63) / 64; i++) {
        n += (uint64_t)__builtin_popcountll(changed[i]);
    }
    if (n > ram_size / PAGE / 2) {
        log_debug("revert of snapshot %s: %llu of %llu pages changed, mapped anew", id,
                  (unsigned long long)n, (unsigned long long)(ram_size / PAGE));
        return restore_stage(m, node, tag, id, ram_offset, packs, st, errp);
    }
    if (stage_init(m, node, tag, id, ram_offset, packs, st, errp) < 0) {
        return -1;
    }
    st->in_place = true;
    size_t nmapped, nneed = 0, cap = 0, r = 0;
    bool anon_elsewhere;
    struct mapped_run *mapped = mapped_runs(m, node, id, &nmapped, &anon_elsewhere);
    uint64_t *need = NULL;
    uint64_t pages = st->ram_size / PAGE;
    /* Every changed run, split by this snapshot's mapped runs: inside one the
     * file has the page, outside it must be looked up. */
    for (uint64_t p = 0; p < pages;) {
        if (p % 64 == 0 && changed[p / 64] == 0) {
            p += 64;
            continue;
        }
        if (!((changed[p / 64] >> (p % 64)) & 1)) {
            p++;
            continue;
        }
        uint64_t q = p + 1;
        while (q < pages && ((changed[q / 64] >> (q % 64)) & 1)) {
            q++;
        }
        for (uint64_t a = p * PAGE, b = q * PAGE; a < b;) {
            while (r < nmapped && mapped[r].off + mapped[r].len <= a) {
                r++;
            }
            uint64_t end;
            if (r < nmapped && mapped[r].off <= a) {
                end = mapped[r].off + mapped[r].len < b ? mapped[r].off + mapped[r].len : b;
                piece_add(st, a, end - a, RESTORE_FILE, mapped[r].host + (a - mapped[r].off));
            } else {
                end = r < nmapped && mapped[r].off < b ? mapped[r].off : b;
                need = room_for(need, nneed, &cap, 2 * sizeof(uint64_t)); /* (offset, length) */
                if (nneed && need[2 * (nneed - 1)] + need[2 * (nneed - 1) + 1] == a) {
                    need[2 * (nneed - 1) + 1] += end - a;
                } else {
                    need[2 * nneed] = a;
                    need[2 * nneed + 1] = end - a;
                    nneed++;
                }
            }
            a = end;
        }
        p = q;
    }
    free(mapped);
    int rc = stage_lookups(st, need, nneed, anon_elsewhere, errp);
    free(need);
    if (rc < 0) {
        restore_stage_free(st);
    }
    return rc;
}

/* Putting the changed pages back (restore.h): no I/O, and the mapping record stays. */
struct piece_work {
    uint8_t *ram;
    const struct ram_stage *st;
    uint64_t lo, hi; /* this share: bytes [lo, hi) of the pieces one after another */
    int err;         /* errno of the first failure, or 0 */
    uint64_t failed; /* and where in guest RAM */
};

static void *apply_pieces(void *opaque)
{
    struct piece_work *w = opaque;
    uint64_t at = 0; /* bytes of the pieces before piece i */
    for (size_t i = 0; i < w->st->npieces && at < w->hi && !w->err; i++) {
        const struct restore_piece *pc = &w->st->pieces[i];
        if (pc->swapped) {
            continue;
        }
        uint64_t a = w->lo > at ? w->lo - at : 0, b = w->hi - at < pc->len ? w->hi - at : pc->len;
        at += pc->len;
        if (a >= b) {
            continue;
        }
        uint8_t *dst = w->ram + pc->off + a;
        /*
         * COPY: the staged bytes.  FILE and ZERO: the guest's private copies
         * go, and the page reads from the file again (FILE) or as zero (ZERO,
         * anonymous memory); KVM drops its own mappings of them through its
         * MMU notifier.
         */
        if (pc->kind == RESTORE_COPY) {
            memcpy(dst, w->st->buf + pc->off + a, b - a);
        } else if (madvise(dst, b - a, MADV_DONTNEED) < 0) {
            w->err = errno;
            w->failed = pc->off + a;
        }
    }
    return NULL;
}

/*
 * Two threads share the work, halves by bytes: dropping pages costs the
 * kernel a page-table walk and KVM's MMU notifier per page (16 MiB measured
 * 2.7 ms in one thread on this host, 1.3 ms in two), and madvise() holds
 * the mm lock only for reading, so disjoint ranges go in parallel.
 */
#define IN_PLACE_SPLIT (4u << 20) /* below this, a thread costs more than it saves */

/*
 * Large FILE and ZERO pieces are put back by swapping mappings instead:
 * mremap() moves the guest's pages out of guest RAM into a parking area
 * (moving page tables, not pages: whole page-table pages where the range
 * covers them), and a fresh mapping -- the image at the piece's file
 * offset, or anonymous zeros -- takes the range.  The parked pages are
 * freed only after the guest runs again (restore_stage_free).  Why: in the
 * pause, freeing is the cost -- measured in a bare process, dropping 16 MiB
 * with MADV_DONTNEED takes 1.0-1.5 ms, moving it away and mapping anew 0.04
 * ms.  The new mapping is what the load made there (same file, offset and
 * flags), so it merges with its neighbours again and the mapping record
 * stays true.
 *
 * Ordering: the vCPUs are parked, and nothing else touches guest RAM during
 * a load (device models run on the vCPU threads), so the moment between
 * the move and the new mapping, when the range is unmapped, is never seen.
 * KVM drops its own mappings of the moved pages through its MMU notifier,
 * as for MADV_DONTNEED.  A move or a mapping that fails is undone and the
 * piece goes page by page as before: no new way to fail.
 */
#define SWAP_MIN (256u << 10) /* below this, two system calls cost more than the drops */
#define PMD_SPAN (2u << 20)   /* a page-table page's reach: moves keep this alignment */

static bool swap_piece(struct ram_stage *st, uint8_t *ram, struct restore_piece *pc,
                       uint64_t *cursor, bool *lost)
{
    uint8_t *dst = ram + pc->off;
    uintptr_t want = (uintptr_t)dst % PMD_SPAN, at = ((uintptr_t)st->parked + *cursor) % PMD_SPAN;
    uint8_t *park = st->parked + *cursor + (want - at + PMD_SPAN) % PMD_SPAN;
    if (mremap(dst, pc->len, pc->len, MREMAP_MAYMOVE | MREMAP_FIXED, park) == MAP_FAILED) {
        return false;
    }
    void *p = pc->kind == RESTORE_FILE
                      ? mmap(dst, pc->len, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, st->fd, (off_t)pc->host)
                      : mmap(dst, pc->len, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        /* Back where they were (the range is free: this cannot clash). */
        *lost = mremap(park, pc->len, pc->len, MREMAP_MAYMOVE | MREMAP_FIXED, dst) == MAP_FAILED;
        return false;
    }
    *cursor = (uint64_t)(park - st->parked) + pc->len;
    return true;
}

static bool swappable(const struct ram_stage *st, const struct restore_piece *pc)
{
    bool file = pc->kind == RESTORE_FILE && st->fd >= 0;
    return (file || pc->kind == RESTORE_ZERO) && pc->len >= SWAP_MIN;
}

/*
 * Swap what is worth it (the rest stays for apply_pieces): how many pieces
 * were swapped, or -1 if RAM lost a range.
 */
static int swap_pieces(struct machine *m, struct ram_stage *st, struct error **errp)
{
    if (!machine_ram_is_private(m)) {
        return 0;
    }
    uint64_t room = 0;
    for (size_t i = 0; i < st->npieces; i++) {
        room += swappable(st, &st->pieces[i]) ? st->pieces[i].len + PMD_SPAN : 0;
    }
    if (!room) {
        return 0;
    }
    void *area = mmap(NULL, room, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED) {
        return 0; /* page by page, then */
    }
    st->parked = area;
    st->parked_len = room;
    uint8_t *ram = machine_ram(m, NULL);
    uint64_t cursor = 0;
    int swapped = 0;
    for (size_t i = 0; i < st->npieces; i++) {
        struct restore_piece *pc = &st->pieces[i];
        if (swappable(st, pc)) {
            bool lost = false;
            pc->swapped = swap_piece(st, ram, pc, &cursor, &lost);
            if (lost) {
                error_setg_errno(errp, errno, "cannot put guest RAM at 0x%llx back in place",
                                 (unsigned long long)pc->off);
                return -1;
            }
            swapped += pc->swapped;
        }
    }
    return swapped;
}

static int commit_in_place(struct machine *m, struct ram_stage *st, struct error **errp)
{
    int swapped = swap_pieces(m, st, errp);
    if (swapped < 0) {
        return -1;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < st->npieces; i++) {
        total += st->pieces[i].swapped ? 0 : st->pieces[i].len;
    }
    uint64_t half = total / 2 / PAGE * PAGE; /* pieces are whole pages: so are the halves */
    struct piece_work w[2] = {
            {.ram = machine_ram(m, NULL), .st = st, .lo = 0, .hi = half},
            {.ram = machine_ram(m, NULL), .st = st, .lo = half, .hi = total},
    };
    pthread_t th;
    bool two = total >= IN_PLACE_SPLIT && pthread_create(&th, NULL, apply_pieces, &w[1]) == 0;
    apply_pieces(&w[0]);
    if (two) {
        pthread_join(th, NULL);
    } else {
        apply_pieces(&w[1]);
    }
    for (int k = 0; k < 2; k++) {
        if (w[k].err) {
            errno = w[k].err;
            error_setg_errno(errp, errno, "cannot put back guest RAM at 0x%llx",
                             (unsigned long long)w[k].failed);
            return -1;
        }
    }
    log_debug("revert in place: %zu pieces of snapshot %s (%d by swapping mappings)", st->npieces,
              st->id, swapped);
    return 0;
}

/*
 * Staged bytes [off, off + len) into fresh guest RAM.  A packed cluster's
 * pages without a slot are zero already: copying them would allocate a
 * page for each.
 */
static void copy_staged(const struct ram_stage *st, uint8_t *ram, uint64_t off, uint64_t len)
{
    const struct ram_packs *p = st->packs;
    uint64_t slot;
    for (uint64_t a = off, end = off + len; a < end;) {
        uint64_t page = a / PAGE, c = p ? page / p->unit : 0;
        uint64_t b = p ? (c + 1) * p->unit * PAGE : end;
        b = b < end ? b : end;
        if (!ram_packs_cluster(p, c, &slot)) {
            memcpy(ram + a, st->buf + a, b - a);
        } else {
            for (uint64_t k = a; k < b; k += PAGE) {
                if (bitmap_test(p->present, k / PAGE)) {
                    memcpy(ram + k, st->buf + k, PAGE);
                }
            }
        }
        a = b;
    }
}

static int commit_locked(struct machine *m, struct ram_mapping *map, struct ram_stage *st,
                         struct error **errp)
{
    if (st->in_place) {
        return commit_in_place(m, st, errp);
    }
    uint8_t *ram = machine_ram(m, NULL);
    /* Whatever was mapped before is replaced entirely. */
    mapping_reset(map);
    if (st->whole && !machine_ram_is_private(m)) {
        memcpy(ram, st->buf, st->ram_size); /* RAM is the -mem-path file */
        return 0;
    }
    if (st->whole) {
        /* The staged pages become guest RAM as they are: no copy. */
        if (mremap(st->buf, st->ram_size, st->ram_size, MREMAP_MAYMOVE | MREMAP_FIXED, ram) ==
            MAP_FAILED) {
            memcpy(ram, st->buf, st->ram_size); /* cannot fail: only slower */
        } else {
            st->buf = NULL; /* now guest RAM */
        }
        return 0;
    }
    /*
     * One fresh anonymous mapping over all of RAM: every page reads as zero
     * (the snapshot's zero runs need nothing more), and whatever an earlier
     * restore mapped from an image is gone in the same call.
     */
    if (mmap(ram, st->ram_size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot replace guest RAM");
        return -1;
    }
    for (size_t i = 0; i < st->count; i++) {
        const struct block_extent *e = &st->extents[i];
        uint64_t off = e->pos - st->ram_offset;
        if (e->kind == BLOCK_EXTENT_ZERO) {
            continue;
        }
        if (!st->mapped[i]) {
            copy_staged(st, ram, off, e->len);
            continue;
        }
        if (mmap(ram + off, e->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE,
                 st->fd, (off_t)e->host_offset) == MAP_FAILED) {
            error_setg_errno(errp, errno, "cannot map guest RAM at 0x%llx from node '%s'",
                             (unsigned long long)off, block_node_name(st->node));
            return -1;
        }
        mapping_add(map, off, e->len, e->host_offset);
    }
    if (map->nr_ranges) {
        map->node = st->node;
        snprintf(map->snapshot_id, sizeof(map->snapshot_id), "%s", st->id);
        log_debug("instant restore: %zu runs of snapshot %s mapped", map->nr_ranges, st->id);
    }
    return 0;
}

/*
 * A hole of the file, mapped at [p, p + len) of guest RAM: each page the
 * guest wrote is already a private copy and stays; every other page (never
 * touched, or the page cache's zero page read from the hole) reads zero,
 * as fresh anonymous memory does, and becomes that.  Copying them instead
 * (as for data) would allocate memory for every zero page.  /proc/self/
 * pagemap says which pages are private (present and not file-backed, or
 * swapped out).  The caller has the vCPUs paused: a guest write between
 * the look and the mmap() would be lost.
 */
static int release_hole(int pagemap, uint8_t *p, uint64_t len, struct error **errp)
{
    uint64_t entries[512];
    uint64_t pages = len / PAGE, run = 0; /* pages to replace, ending before page i */
    for (uint64_t i = 0; i <= pages; i++) {
        bool keep = true;
        if (i < pages) {
            if (i % 512 == 0) {
                uint64_t n = pages - i < 512 ? pages - i : 512;
                if (pagemap_entries(pagemap, p + i * PAGE, n, entries) < 0) {
                    error_setg_errno(errp, errno, "reading /proc/self/pagemap");
                    return -1;
                }
            }
            uint64_t e = entries[i % 512];
            keep = (e & PAGEMAP_SWAPPED) || ((e & PAGEMAP_PRESENT) && !(e & PAGEMAP_FILE));
        }
        if (!keep) {
            run++;
            continue;
        }
        if (run &&
            mmap(p + (i - run) * PAGE, run * PAGE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
            error_setg_errno(errp, errno, "replacing guest RAM mapped from a hole");
            return -1;
        }
        run = 0;
    }
    return 0;
}

/* Make one mapped run private: its data copied, its holes as above. */
static int release_run(int fd, int *pagemap, uint8_t *ram, const struct mapped_run *r,
                       struct error **errp)
{
    uint64_t at = r->host, end = r->host + r->len;
    while (at < end) {
        off_t d = lseek(fd, (off_t)at, SEEK_DATA);
        uint64_t data = d < 0 || (uint64_t)d > end ? end : (uint64_t)d / PAGE * PAGE;
        if (data > at) {
            if (*pagemap < 0 && (*pagemap = open("/proc/self/pagemap", O_RDONLY)) < 0) {
                error_setg_errno(errp, errno, "opening /proc/self/pagemap");
                return -1;
            }
            if (release_hole(*pagemap, ram + r->off + (at - r->host), data - at, errp) < 0) {
                return -1;
            }
            at = data;
        }
        if (at == end) {
            break;
        }
        off_t h = lseek(fd, (off_t)at, SEEK_HOLE);
        uint64_t hole = h < 0 || (uint64_t)h > end ? end : ((uint64_t)h + PAGE - 1) / PAGE * PAGE;
        hole = hole > end ? end : hole;
        /*
         * A write fault on every page of a MAP_PRIVATE file mapping copies
         * it into anonymous memory without changing its content:
         * afterwards nothing refers to the image's clusters.
         */
        if (madvise(ram + r->off + (at - r->host), hole - at, MADV_POPULATE_WRITE) < 0) {
            error_setg_errno(errp, errno, "copying guest RAM at 0x%llx",
                             (unsigned long long)(r->off + (at - r->host)));
            return -1;
        }
        at = hole;
    }
    return 0;
}

static int restore_release_locked(struct machine *m, struct ram_mapping *map,
                                  struct block_node *node, const char *id, struct error **errp)
{
    if (!map || map->node != node || strcmp(map->snapshot_id, id) != 0) {
        return 0;
    }
    uint8_t *ram = machine_ram(m, NULL);
    int fd = block_node_host_fd(node), pagemap = -1, rc = 0;
    machine_pause_vcpus(m, NULL); /* the holes need it (release_hole); cannot fail */
    for (size_t i = 0; rc == 0 && i < map->nr_ranges; i++) {
        rc = release_run(fd, &pagemap, ram, &map->ranges[i], errp);
    }
    machine_resume_vcpus(m);
    if (pagemap >= 0) {
        close(pagemap);
    }
    if (rc < 0) {
        error_prepend(errp,
                      "making guest RAM mapped from snapshot '%s' on node '%s' private before "
                      "deleting it",
                      id, block_node_name(node));
        return -1;
    }
    mapping_reset(map);
    return 0;
}

int restore_commit(struct machine *m, struct ram_stage *st, struct error **errp)
{
    pthread_mutex_lock(&mappings_lock);
    int rc = commit_locked(m, mapping_of(m, true), st, errp);
    pthread_mutex_unlock(&mappings_lock);
    return rc;
}

int restore_release(struct machine *m, struct block_node *node, const char *id, struct error **errp)
{
    pthread_mutex_lock(&mappings_lock);
    int rc = restore_release_locked(m, mapping_of(m, false), node, id, errp);
    pthread_mutex_unlock(&mappings_lock);
    return rc;
}
