/*
 * Guest RAM save/load for snapshots (see ram.h).  Pages to store are
 * widened to whole clusters (the block layer rebuilds a cluster from RAM
 * rather than reading it back) and handed over in batches of runs of up to
 * RAM_IO_CHUNK bytes of RAM: one batch is many writes in flight and at most
 * one flush, and the node's lock is free between batches for guest disk I/O.
 */
#include "snapshot/ram.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/block.h"
#include "snapshot/pack.h"
#include "snapshot/vmstate.h"
#include "util/bitmap.h"

#define PAGE         VMSTATE_PAGE_SIZE
#define RAM_IO_CHUNK (32u << 20) /* RAM per block-layer batch: the node lock's longest hold */

/*
 * A cache line at a time, stopping at the first one with data: a page of
 * data costs one line, not the whole page (the save reads every page of
 * RAM; on this test machine that was a fifth of a save's time).
 */
bool page_is_zero(const void *p)
{
    const uint64_t *w = p;
    for (size_t i = 0; i < PAGE / sizeof(uint64_t); i += 8) {
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7]) {
            return false;
        }
    }
    return true;
}

int ram_saver_init(struct ram_saver *s, struct block_node *node, uint64_t ram_offset,
                   const uint8_t *ram, uint64_t ram_size, struct error **errp)
{
    memset(s, 0, sizeof(*s));
    uint64_t pages = ram_size / PAGE;
    s->stored = calloc((pages + 63) / 64, sizeof(uint64_t));
    s->zero = calloc((pages + 63) / 64, sizeof(uint64_t));
    if (!s->stored || !s->zero) {
        free(s->stored);
        free(s->zero);
        error_setg(errp, "out of memory for the RAM page map (%llu pages)",
                   (unsigned long long)pages);
        return -1;
    }
    s->runs = calloc(RAM_MAX_RUNS, sizeof(*s->runs));
    if (!s->runs) {
        free(s->stored);
        free(s->zero);
        error_setg(errp, "out of memory for the RAM writer");
        return -1;
    }
    uint32_t cs = block_node_cluster_size(node);
    s->cluster_pages = cs > PAGE ? cs / PAGE : 1;
    if (s->cluster_pages > 1) {
        s->packs = ram_packs_new(ram_size, (uint32_t)s->cluster_pages);
    }
    s->node = node;
    s->ram_offset = ram_offset;
    s->ram = ram;
    s->ram_size = ram_size;
    s->holes = RAM_HOLES_NONE;
    s->holes_fd = -1;
    return 0;
}

void ram_saver_find_holes(struct ram_saver *s, int ram_file, bool anonymous)
{
    int fd = ram_file;
    if (fd < 0 && anonymous) {
        fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC); /* none: every page is read */
    }
    if (fd >= 0) {
        s->holes = fd == ram_file ? RAM_HOLES_FILE : RAM_HOLES_PAGEMAP;
        s->holes_fd = fd;
    }
}

/*
 * Which pages [first, first + count) of the RAM file are holes, by
 * SEEK_DATA/SEEK_HOLE (a file system without them reports all data).  A
 * failed look leaves the rest not known: it is then read, as without a file.
 */
static void seek_holes(struct ram_saver *s, uint64_t first, uint64_t count)
{
    uint64_t end = (first + count) * PAGE;
    for (uint64_t off = first * PAGE; off < end;) {
        off_t data = lseek(s->holes_fd, (off_t)off, SEEK_DATA);
        bool tail = data < 0 && errno == ENXIO; /* no data from off on */
        if (data < 0 && !tail) {
            return;
        }
        uint64_t hole_end = tail || (uint64_t)data > end ? end : (uint64_t)data;
        /* Only whole pages: a hole's edges need not be page-aligned. */
        uint64_t a = (off + PAGE - 1) / PAGE, b = hole_end / PAGE;
        if (a < b) {
            bitmap_assign(s->zero, a, b, true);
        }
        if (hole_end >= end) {
            return;
        }
        off_t next = lseek(s->holes_fd, data, SEEK_HOLE);
        if (next <= data) {
            return;
        }
        off = (uint64_t)next;
    }
}

/*
 * The same by FIEMAP: one call lists up to FIEMAP_BATCH extents, where
 * SEEK_DATA and SEEK_HOLE cost two calls per hole -- with zero pages
 * interleaved at 4 KiB, 0.8 s for 4 GiB of RAM against 0.25 s here, and
 * on the critical path of a save.  What lies between extents is a hole.
 *
 * Why that is as safe as SEEK_DATA: the call is made without
 * FIEMAP_FLAG_SYNC, and a file system then lists what is not yet on disk
 * too -- delayed allocations (FIEMAP_EXTENT_DELALLOC) and unwritten
 * extents -- from the same in-memory extent state that SEEK_DATA consults
 * (ext4, XFS and btrfs: a page written through the shared mapping has such
 * a reservation from its first write fault on).  Every listed extent, of
 * any kind, counts as data, and its pages are read.  False (nothing
 * marked): no FIEMAP here (tmpfs, hugetlbfs), or the call failed; the
 * caller then seeks.
 */
#define FIEMAP_BATCH 1024

static bool fiemap_holes(struct ram_saver *s, uint64_t first, uint64_t count)
{
    if (s->no_fiemap) {
        return false;
    }
    struct fiemap *fm = malloc(sizeof(*fm) + FIEMAP_BATCH * sizeof(struct fiemap_extent));
    if (!fm) {
        return false;
    }
    /* All holes, then each listed extent's pages (whole pages outward) data. */
    bitmap_assign(s->zero, first, first + count, true);
    uint64_t end = (first + count) * PAGE, at = first * PAGE;
    bool ok = true;
    while (at < end) {
        memset(fm, 0, sizeof(*fm));
        fm->fm_start = at;
        fm->fm_length = end - at;
        fm->fm_extent_count = FIEMAP_BATCH;
        if (ioctl(s->holes_fd, FS_IOC_FIEMAP, fm) < 0) {
            s->no_fiemap = errno == ENOTTY || errno == EOPNOTSUPP;
            ok = false;
            break;
        }
        uint64_t next = end;
        for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
            const struct fiemap_extent *e = &fm->fm_extents[i];
            uint64_t a = e->fe_logical > at ? e->fe_logical : at;
            uint64_t b = e->fe_logical + e->fe_length < end ? e->fe_logical + e->fe_length : end;
            if (a < b) {
                bitmap_assign(s->zero, a / PAGE, (b + PAGE - 1) / PAGE, false);
            }
            next = e->fe_logical + e->fe_length;
        }
        uint32_t n = fm->fm_mapped_extents;
        if (n < FIEMAP_BATCH || (fm->fm_extents[n - 1].fe_flags & FIEMAP_EXTENT_LAST)) {
            break;
        }
        if (next <= at) {
            ok = false; /* no progress: do not trust this answer */
            break;
        }
        at = next;
    }
    if (!ok) {
        bitmap_assign(s->zero, first, first + count, false); /* nothing known, as before */
    }
    free(fm);
    return ok;
}

static void file_holes(struct ram_saver *s, uint64_t first, uint64_t count)
{
    if (!fiemap_holes(s, first, count)) {
        seek_holes(s, first, count);
    }
}

int pagemap_entries(int pagemap, const void *p, uint64_t n, uint64_t *entries)
{
    off_t at = (off_t)((uintptr_t)p / PAGE * sizeof(uint64_t));
    ssize_t got = pread(pagemap, entries, n * sizeof(uint64_t), at);
    if (got != (ssize_t)(n * sizeof(uint64_t))) {
        errno = got < 0 ? errno : EIO;
        return -1;
    }
    return 0;
}

/* Which pages [first, first + count) of anonymous RAM were never touched. */
static void untouched_pages(struct ram_saver *s, uint64_t first, uint64_t count)
{
    uint64_t entries[512];
    for (uint64_t i = 0; i < count;) {
        uint64_t n = count - i < 512 ? count - i : 512;
        if (pagemap_entries(s->holes_fd, s->ram + (first + i) * PAGE, n, entries) < 0) {
            return; /* the rest not known */
        }
        for (uint64_t k = 0; k < n; k++) {
            if (!(entries[k] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED))) {
                s->zero[(first + i + k) / 64] |= 1ull << ((first + i + k) % 64);
            }
        }
        i += n;
    }
}

/*
 * The zero map of pages [first, first + count), exact: what the kernel
 * knows without a read (see `holes`), the rest read.  The block layer then
 * reads no page again.
 */
static void find_zero_pages(struct ram_saver *s, uint64_t first, uint64_t count)
{
    bitmap_assign(s->zero, first, first + count, false);
    if (s->holes == RAM_HOLES_FILE) {
        file_holes(s, first, count);
    } else if (s->holes == RAM_HOLES_PAGEMAP) {
        untouched_pages(s, first, count);
    }
    s->pages_known_zero += bitmap_count(s->zero, first, first + count, false);
    for (uint64_t i = first; i < first + count; i++) {
        if (!bitmap_test(s->zero, i) && page_is_zero(s->ram + i * PAGE)) {
            s->zero[i / 64] |= 1ull << (i % 64);
        }
    }
}

void ram_saver_destroy(struct ram_saver *s)
{
    free(s->stored);
    free(s->runs);
    free(s->zero);
    ram_packs_free(s->packs);
    if (s->holes == RAM_HOLES_PAGEMAP) {
        close(s->holes_fd);
    }
    s->holes = RAM_HOLES_NONE;
    s->holes_fd = -1;
    s->stored = NULL;
    s->runs = NULL;
    s->zero = NULL;
    s->packs = NULL;
}

/* Stored-map bits set in pages [first, first + count). */
static uint64_t count_stored(const struct ram_saver *s, uint64_t first, uint64_t count)
{
    return bitmap_count(s->stored, first, first + count, false);
}

static void report_progress(struct ram_saver *s, uint64_t pages)
{
    if (s->progress && pages) {
        s->progress(s->opaque, pages * PAGE);
    }
}

/* Polled before each write to the block layer. */
static int check_cancelled(struct ram_saver *s, struct error **errp)
{
    if (s->cancelled && s->cancelled(s->opaque)) {
        error_setg(errp, "the snapshot was cancelled");
        return -1;
    }
    return 0;
}

/* After a write of `pages` pages: `before` and `after` of them marked stored. */
static void account_write(struct ram_saver *s, uint64_t pages, uint64_t before, uint64_t after)
{
    s->pages_stored = s->pages_stored - before + after;
    s->bytes_written += after * PAGE;
    report_progress(s, pages);
}

/* Hand the collected runs to the block layer in one batch. */
static int batch_flush(struct ram_saver *s, struct error **errp)
{
    if (s->nruns == 0) {
        return 0;
    }
    if (check_cancelled(s, errp) < 0) {
        return -1;
    }
    uint64_t before = 0, after = 0, pages = 0;
    for (size_t i = 0; i < s->nruns; i++) {
        uint64_t first = (s->runs[i].pos - s->ram_offset) / PAGE, count = s->runs[i].len / PAGE;
        before += count_stored(s, first, count);
        pages += count;
        find_zero_pages(s, first, count);
        s->runs[i].known_zero = s->zero;
        s->runs[i].known_zero_first = first;
        s->runs[i].zero_map_exact = true;
    }
    if (block_vmstate_write_ram(s->node, s->runs, s->nruns, s->stored, s->ram_offset, false, errp) <
        0) {
        error_prepend(errp, "writing guest RAM (%zu runs from 0x%llx)", s->nruns,
                      (unsigned long long)(s->runs[0].pos - s->ram_offset));
        s->nruns = 0;
        return -1;
    }
    for (size_t i = 0; i < s->nruns; i++) {
        after += count_stored(s, (s->runs[i].pos - s->ram_offset) / PAGE, s->runs[i].len / PAGE);
    }
    s->nruns = 0;
    s->batch_bytes = 0;
    account_write(s, pages, before, after);
    return 0;
}

/* Queue pages [first, first + count) (already cluster-aligned) for the batch. */
static int batch_add(struct ram_saver *s, uint64_t first, uint64_t count, struct error **errp)
{
    while (count > 0) {
        uint64_t room = (RAM_IO_CHUNK - s->batch_bytes) / PAGE;
        uint64_t n = count < room ? count : room;
        struct block_vmstate_run *last = s->nruns ? &s->runs[s->nruns - 1] : NULL;
        uint64_t pos = s->ram_offset + first * PAGE;
        if (last && last->pos + last->len == pos) {
            last->len += n * PAGE;
        } else {
            s->runs[s->nruns++] = (struct block_vmstate_run){
                    .pos = pos, .buf = s->ram + first * PAGE, .len = n * PAGE};
        }
        s->batch_bytes += n * PAGE;
        first += n;
        count -= n;
        if ((s->batch_bytes >= RAM_IO_CHUNK || s->nruns == RAM_MAX_RUNS) &&
            batch_flush(s, errp) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The pages of the clusters that hold pages [first, first + count). */
static void cluster_span(const struct ram_saver *s, uint64_t *first, uint64_t *count)
{
    uint64_t end = *first + *count, pages = s->ram_size / PAGE;
    uint64_t a = *first / s->cluster_pages * s->cluster_pages;
    uint64_t b = (end + s->cluster_pages - 1) / s->cluster_pages * s->cluster_pages;
    *first = a;
    *count = (b < pages ? b : pages) - a;
}

/*
 * The first pass, as a pipeline of chunks of RAM_IO_CHUNK: while the disk
 * writes chunk k - 1 and the block layer plans chunk k (the caller's
 * thread; block.h's in_flight), a helper thread prepares chunk k + 1 --
 * which pages are zero, and the packing (pack.h) into its bounce buffer.
 * Three buffers, as three chunks are then under way.  Without the helper
 * the steps alternated: on the test machine a 1 GiB save of RAM with zero
 * pages interleaved spent 0.36 s preparing and 0.58 s writing, one after
 * the other.  A chunk's buffer is reused only after the block layer has
 * waited for that chunk's writes (the call for the chunk after it does).
 *
 * Why the two never touch the same memory: chunks start at multiples of
 * RAM_IO_CHUNK in RAM (whole 64-bit words of every page bitmap), the
 * helper writes only its own chunk's bits of `zero` and of the pack map,
 * and the slots it fills start where the previous chunk's end (slots are
 * given out when a chunk is prepared).  The block layer, stored map and
 * progress stay on the caller's thread.
 */
struct ram_chunk {
    struct ram_saver *s;
    uint64_t first, count;             /* pages */
    uint8_t *bounce;                   /* RAM_IO_CHUNK bytes of slots */
    uint64_t slot_from, filled, slots; /* slots given out: `slots` from slot_from, `filled` used */
    uint64_t stored_before;
};

/*
 * Pack the chunk's clusters of zero and non-zero pages: their non-zero
 * pages into the bounce buffer, as slots from the pack area's end on, and
 * all their pages zero in the zero map, so that their places stay holes.
 */
static void pack_chunk(struct ram_chunk *k)
{
    struct ram_saver *s = k->s;
    struct ram_packs *p = s->packs;
    uint64_t pages = s->ram_size / PAGE, n = 0;
    k->slot_from = p->slots;
    for (uint64_t a = k->first; a < k->first + k->count; a += s->cluster_pages) {
        uint64_t b = a + s->cluster_pages < pages ? a + s->cluster_pages : pages;
        uint64_t zeros = bitmap_count(s->zero, a, b, false), c = a / s->cluster_pages;
        if (zeros == 0 || zeros == b - a || p->index[c]) {
            continue;
        }
        p->index[c] = (uint32_t)(1 + k->slot_from + n);
        p->packed++;
        for (uint64_t i = a; i < b; i++) {
            if (!bitmap_test(s->zero, i)) {
                memcpy(k->bounce + n++ * PAGE, s->ram + i * PAGE, PAGE);
                p->present[i / 64] |= 1ull << (i % 64);
            }
        }
        bitmap_assign(s->zero, a, b, true);
    }
    /* Whole clusters of slots: the last one's tail is zeros, a hole in the file. */
    k->filled = n;
    k->slots = (n + s->cluster_pages - 1) / s->cluster_pages * s->cluster_pages;
    memset(k->bounce + n * PAGE, 0, (k->slots - n) * PAGE);
    p->slots += k->slots;
}

static void *prepare_chunk(void *opaque)
{
    struct ram_chunk *k = opaque;
    find_zero_pages(k->s, k->first, k->count);
    k->filled = k->slots = 0;
    if (k->bounce) {
        pack_chunk(k);
    }
    return NULL;
}

/*
 * The chunk's place in the RAM section and its slots in the pack area, in
 * one call: one allocation and one drain of the writer for both, where two
 * calls cost 0.15 s of a 4 GiB save with zero pages interleaved.
 */
static int write_chunk(struct ram_chunk *k, struct error **errp)
{
    struct ram_saver *s = k->s;
    if (check_cancelled(s, errp) < 0) {
        return -1;
    }
    struct ram_packs *p = s->packs;
    struct block_vmstate_run runs[2] = {{.pos = s->ram_offset + k->first * PAGE,
                                         .buf = s->ram + k->first * PAGE,
                                         .len = k->count * PAGE,
                                         .known_zero = s->zero,
                                         .known_zero_first = k->first,
                                         .zero_map_exact = true}};
    if (k->slots) {
        runs[1] = (struct block_vmstate_run){.pos = p->offset + k->slot_from * PAGE,
                                             .buf = k->bounce,
                                             .len = k->slots * PAGE,
                                             .unmapped = true};
    }
    if (block_vmstate_write_ram(s->node, runs, k->slots ? 2 : 1, s->stored, s->ram_offset, true,
                                errp) < 0) {
        error_prepend(errp, "writing guest RAM at 0x%llx (%llu pages packed)",
                      (unsigned long long)(k->first * PAGE), (unsigned long long)k->filled);
        return -1;
    }
    if (k->slots) {
        /* The block layer saw packed clusters as zero; their slots hold the data. */
        for (uint64_t i = k->first / 64; i < (k->first + k->count + 63) / 64; i++) {
            s->stored[i] |= p->present[i];
        }
    }
    account_write(s, k->count, k->stored_before, count_stored(s, k->first, k->count));
    return 0;
}

#define RAM_CHUNKS 3 /* under way at once: in flight, being planned, being prepared */

/* The next chunk of [*at, end) into k (count 0: none left), ending on a multiple of the size. */
static void next_chunk(struct ram_saver *s, struct ram_chunk *k, uint64_t *at, uint64_t end)
{
    const uint64_t chunk = RAM_IO_CHUNK / PAGE; /* a multiple of 64 and of any cluster */
    uint64_t stop = (*at / chunk + 1) * chunk;
    k->first = *at;
    k->count = *at < end ? (stop < end ? stop : end) - *at : 0;
    k->stored_before = count_stored(s, k->first, k->count);
    *at += k->count;
}

int ram_save_pages(struct ram_saver *s, uint64_t first, uint64_t count, struct error **errp)
{
    cluster_span(s, &first, &count);
    struct ram_chunk k[RAM_CHUNKS];
    for (int i = 0; i < RAM_CHUNKS; i++) {
        k[i] = (struct ram_chunk){.s = s};
        void *b = s->packs ? mmap(NULL, RAM_IO_CHUNK, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                           : MAP_FAILED;
        k[i].bounce = b == MAP_FAILED ? NULL : b; /* none: that chunk is stored in place */
    }
    int rc = 0;
    uint64_t end = first + count, at = first;
    /* Chunk 0, prepared here; then each next one beside the write of the last. */
    next_chunk(s, &k[0], &at, end);
    if (k[0].count) {
        prepare_chunk(&k[0]);
    }
    for (unsigned cur = 0; rc == 0 && k[cur].count; cur = (cur + 1) % RAM_CHUNKS) {
        struct ram_chunk *next = &k[(cur + 1) % RAM_CHUNKS];
        next_chunk(s, next, &at, end);
        pthread_t th;
        bool helper = next->count && pthread_create(&th, NULL, prepare_chunk, next) == 0;
        if (next->count && !helper) {
            prepare_chunk(next);
        }
        rc = write_chunk(&k[cur], errp);
        if (helper) {
            pthread_join(th, NULL);
        }
    }
    /* The last chunk's writes, still in flight (after a failure: whatever is). */
    struct error *err = NULL;
    if (block_vmstate_ram_wait(s->node, rc < 0 ? &err : errp) < 0 && rc == 0) {
        error_prepend(errp, "writing guest RAM");
        rc = -1;
    }
    error_free(err);
    for (int i = 0; i < RAM_CHUNKS; i++) {
        if (k[i].bounce) {
            munmap(k[i].bounce, RAM_IO_CHUNK);
        }
    }
    return rc;
}

/* Is any page of cluster c marked? */
static bool cluster_marked(const struct ram_saver *s, const uint64_t *dirty, uint64_t c)
{
    uint64_t pages = s->ram_size / PAGE, p0 = c * s->cluster_pages;
    uint64_t p1 = p0 + s->cluster_pages < pages ? p0 + s->cluster_pages : pages;
    return bitmap_count(dirty, p0, p1, true) != 0;
}

uint64_t ram_dirty_cluster_pages(const struct ram_saver *s, const uint64_t *dirty)
{
    uint64_t pages = s->ram_size / PAGE, n = 0;
    for (uint64_t c = 0; c * s->cluster_pages < pages; c++) {
        if (cluster_marked(s, dirty, c)) {
            uint64_t p0 = c * s->cluster_pages;
            n += p0 + s->cluster_pages < pages ? s->cluster_pages : pages - p0;
        }
    }
    return n;
}

int ram_save_dirty(struct ram_saver *s, const uint64_t *dirty, struct error **errp)
{
    uint64_t pages = s->ram_size / PAGE;
    for (uint64_t c = 0; c * s->cluster_pages < pages; c++) {
        if (cluster_marked(s, dirty, c)) {
            uint64_t first = c * s->cluster_pages, count = 1;
            cluster_span(s, &first, &count);
            if (s->packs && s->packs->index[c]) {
                /* Rewritten in place: its place is a hole, its slots are dead. */
                s->pages_stored -= count_stored(s, first, count);
                bitmap_assign(s->stored, first, first + count, false);
                ram_packs_unpack(s->packs, c);
            }
            if (batch_add(s, first, count, errp) < 0) {
                return -1;
            }
        }
    }
    return batch_flush(s, errp);
}

uint64_t *ram_stored_map(struct block_node *node, const char *tag, uint64_t ram_offset,
                         const struct ram_packs *packs, uint64_t ram_size, uint64_t *pages_stored)
{
    uint64_t pages = ram_size / PAGE;
    uint64_t *map = calloc((pages + 63) / 64 + 1, sizeof(uint64_t));
    struct block_extent *ext = NULL;
    size_t n = 0;
    if (!map || block_snapshot_vmstate_map(node, tag, ram_offset, ram_size, &ext, &n, NULL) < 0) {
        free(map);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (ext[i].kind == BLOCK_EXTENT_ZERO) {
            continue;
        }
        /* Stored clusters may hold zero pages (holes): "maybe non-zero" is
         * what the map needs (a zero page marked stored is merely rewritten). */
        uint64_t first = (ext[i].pos - ram_offset) / PAGE;
        uint64_t last = (ext[i].pos - ram_offset + ext[i].len + PAGE - 1) / PAGE;
        bitmap_assign(map, first, last < pages ? last : pages, true);
    }
    free(ext);
    ram_packs_stored(packs, map); /* a packed cluster's place is a hole; its slots count */
    *pages_stored = bitmap_count(map, 0, pages, false);
    return map;
}

int ram_load(struct block_node *node, const char *tag, uint64_t ram_offset,
             const struct ram_packs *packs, uint8_t *ram, uint64_t ram_size, struct error **errp)
{
    for (uint64_t pos = 0; pos < ram_size; pos += RAM_IO_CHUNK) {
        uint64_t len = ram_size - pos < RAM_IO_CHUNK ? ram_size - pos : RAM_IO_CHUNK;
        if (ram_read(node, tag, ram_offset, packs, pos, len, ram + pos, errp) < 0) {
            error_prepend(errp, "reading guest RAM at 0x%llx from node '%s'",
                          (unsigned long long)pos, block_node_name(node));
            return -1;
        }
    }
    return 0;
}
