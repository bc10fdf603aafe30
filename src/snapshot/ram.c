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
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "snapshot/vmstate.h"

#define PAGE         VMSTATE_PAGE_SIZE
#define RAM_IO_CHUNK (32u << 20) /* RAM per block-layer batch: the node lock's longest hold */

bool page_is_zero(const void *p)
{
    const uint64_t *w = p;
    uint64_t acc = 0;
    for (size_t i = 0; i < PAGE / sizeof(uint64_t); i++) {
        acc |= w[i];
    }
    return acc == 0;
}

/*
 * Bits set in map[from, to), a word at a time (stop_at_one: 1 as soon as
 * one is found).  The final pass runs these over every cluster of RAM with
 * the guest paused: bit by bit that was milliseconds at 4 GiB.
 */
static uint64_t bits_set(const uint64_t *map, uint64_t from, uint64_t to, bool stop_at_one)
{
    uint64_t n = 0;
    while (from < to) {
        uint64_t b = from % 64, len = 64 - b < to - from ? 64 - b : to - from;
        uint64_t mask = (len == 64 ? ~0ull : (1ull << len) - 1) << b;
        n += (uint64_t)__builtin_popcountll(map[from / 64] & mask);
        if (n && stop_at_one) {
            return 1;
        }
        from += len;
    }
    return n;
}

int ram_saver_init(struct ram_saver *s, struct block_node *node, uint64_t ram_offset,
                   const uint8_t *ram, uint64_t ram_size, struct error **errp)
{
    memset(s, 0, sizeof(*s));
    uint64_t pages = ram_size / PAGE;
    s->stored = calloc((pages + 63) / 64, sizeof(uint64_t));
    if (!s->stored) {
        error_setg(errp, "out of memory for the RAM page map (%llu pages)",
                   (unsigned long long)pages);
        return -1;
    }
    s->runs = calloc(RAM_MAX_RUNS, sizeof(*s->runs));
    if (!s->runs) {
        free(s->stored);
        error_setg(errp, "out of memory for the RAM writer");
        return -1;
    }
    uint32_t cs = block_node_cluster_size(node);
    s->cluster_pages = cs > PAGE ? cs / PAGE : 1;
    s->node = node;
    s->ram_offset = ram_offset;
    s->ram = ram;
    s->ram_size = ram_size;
    s->holes = RAM_HOLES_NONE;
    s->holes_fd = -1;
    return 0;
}

int ram_saver_find_holes(struct ram_saver *s, int ram_file, bool anonymous, struct error **errp)
{
    int fd = ram_file;
    if (fd < 0 && anonymous) {
        fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC); /* none: every page is read */
    }
    if (fd < 0) {
        return 0;
    }
    s->known_zero = calloc((s->ram_size / PAGE + 63) / 64, sizeof(uint64_t));
    if (!s->known_zero) {
        if (fd != ram_file) {
            close(fd);
        }
        error_setg(errp, "out of memory for the RAM hole map");
        return -1;
    }
    s->holes = fd == ram_file ? RAM_HOLES_FILE : RAM_HOLES_PAGEMAP;
    s->holes_fd = fd;
    return 0;
}

/* Bits [a, b) of map set to v. */
static void set_bits(uint64_t *map, uint64_t a, uint64_t b, bool v)
{
    while (a < b) {
        uint64_t n = 64 - a % 64 < b - a ? 64 - a % 64 : b - a;
        uint64_t mask = (n == 64 ? ~0ull : (1ull << n) - 1) << (a % 64);
        map[a / 64] = v ? map[a / 64] | mask : map[a / 64] & ~mask;
        a += n;
    }
}

/*
 * Which pages [first, first + count) of the RAM file are holes (SEEK_DATA/
 * SEEK_HOLE; a file system without them reports all data).  A failed look
 * leaves the rest not known: it is then read, as without a file.
 */
static void file_holes(struct ram_saver *s, uint64_t first, uint64_t count)
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
            set_bits(s->known_zero, a, b, true);
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
                s->known_zero[(first + i + k) / 64] |= 1ull << ((first + i + k) % 64);
            }
        }
        i += n;
    }
}

static void look_up_holes(struct ram_saver *s, uint64_t first, uint64_t count)
{
    set_bits(s->known_zero, first, first + count, false);
    if (s->holes == RAM_HOLES_FILE) {
        file_holes(s, first, count);
    } else {
        untouched_pages(s, first, count);
    }
    s->pages_known_zero += bits_set(s->known_zero, first, first + count, false);
}

void ram_saver_destroy(struct ram_saver *s)
{
    free(s->stored);
    free(s->runs);
    free(s->known_zero);
    if (s->holes == RAM_HOLES_PAGEMAP) {
        close(s->holes_fd);
    }
    s->holes = RAM_HOLES_NONE;
    s->holes_fd = -1;
    s->stored = NULL;
    s->runs = NULL;
    s->known_zero = NULL;
}

/* Stored-map bits set in pages [first, first + count). */
static uint64_t count_stored(const struct ram_saver *s, uint64_t first, uint64_t count)
{
    return bits_set(s->stored, first, first + count, false);
}

static void report_progress(struct ram_saver *s, uint64_t pages)
{
    if (s->progress && pages) {
        s->progress(s->opaque, pages * PAGE);
    }
}

/* Hand the collected runs to the block layer in one batch. */
static int batch_flush(struct ram_saver *s, struct error **errp)
{
    if (s->nruns == 0) {
        return 0;
    }
    if (s->cancelled && s->cancelled(s->opaque)) {
        error_setg(errp, "the snapshot was cancelled");
        return -1;
    }
    uint64_t before = 0, after = 0, pages = 0;
    for (size_t i = 0; i < s->nruns; i++) {
        uint64_t first = (s->runs[i].pos - s->ram_offset) / PAGE, count = s->runs[i].len / PAGE;
        before += count_stored(s, first, count);
        pages += count;
        if (s->known_zero) {
            look_up_holes(s, first, count);
            s->runs[i].known_zero = s->known_zero;
            s->runs[i].known_zero_first = first;
        }
    }
    if (block_vmstate_write_ram(s->node, s->runs, s->nruns, s->stored, s->ram_offset, errp) < 0) {
        error_prepend(errp, "writing guest RAM (%zu runs from 0x%llx)", s->nruns,
                      (unsigned long long)(s->runs[0].pos - s->ram_offset));
        s->nruns = 0;
        return -1;
    }
    for (size_t i = 0; i < s->nruns; i++) {
        after += count_stored(s, (s->runs[i].pos - s->ram_offset) / PAGE, s->runs[i].len / PAGE);
    }
    s->pages_stored = s->pages_stored - before + after;
    s->bytes_written += after * PAGE;
    s->nruns = 0;
    s->batch_bytes = 0;
    report_progress(s, pages);
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

int ram_save_pages(struct ram_saver *s, uint64_t first, uint64_t count, struct error **errp)
{
    cluster_span(s, &first, &count);
    if (batch_add(s, first, count, errp) < 0) {
        return -1;
    }
    return batch_flush(s, errp);
}

/* Is any page of cluster c marked? */
static bool cluster_marked(const struct ram_saver *s, const uint64_t *dirty, uint64_t c)
{
    uint64_t pages = s->ram_size / PAGE, p0 = c * s->cluster_pages;
    uint64_t p1 = p0 + s->cluster_pages < pages ? p0 + s->cluster_pages : pages;
    return bits_set(dirty, p0, p1, true) != 0;
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
            if (batch_add(s, first, count, errp) < 0) {
                return -1;
            }
        }
    }
    return batch_flush(s, errp);
}

uint64_t *ram_stored_map(struct block_node *node, const char *tag, uint64_t ram_offset,
                         uint64_t ram_size, uint64_t *pages_stored)
{
    uint64_t pages = ram_size / PAGE;
    uint64_t *map = calloc((pages + 63) / 64 + 1, sizeof(uint64_t));
    struct block_extent *ext = NULL;
    size_t n = 0;
    if (!map || block_snapshot_vmstate_map(node, tag, ram_offset, ram_size, &ext, &n, NULL) < 0) {
        free(map);
        return NULL;
    }
    *pages_stored = 0;
    for (size_t i = 0; i < n; i++) {
        if (ext[i].kind == BLOCK_EXTENT_ZERO) {
            continue;
        }
        /* Stored clusters may hold zero pages (holes): "maybe non-zero" is
         * what the map needs (a zero page marked stored is merely rewritten). */
        uint64_t first = (ext[i].pos - ram_offset) / PAGE;
        uint64_t last = (ext[i].pos - ram_offset + ext[i].len + PAGE - 1) / PAGE;
        for (uint64_t p = first; p < last && p < pages; p++) {
            map[p / 64] |= 1ull << (p % 64);
            (*pages_stored)++;
        }
    }
    free(ext);
    return map;
}

int ram_load(struct block_node *node, const char *tag, uint64_t ram_offset, uint8_t *ram,
             uint64_t ram_size, struct error **errp)
{
    for (uint64_t pos = 0; pos < ram_size; pos += RAM_IO_CHUNK) {
        uint64_t len = ram_size - pos < RAM_IO_CHUNK ? ram_size - pos : RAM_IO_CHUNK;
        if (block_snapshot_vmstate_read(node, tag, ram_offset + pos, ram + pos, len, errp) < 0) {
            error_prepend(errp, "reading guest RAM at 0x%llx from node '%s'",
                          (unsigned long long)pos, block_node_name(node));
            return -1;
        }
    }
    return 0;
}
