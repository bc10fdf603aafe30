/*
 * Guest RAM save/load for snapshots (see ram.h).  Writes are batched into
 * runs of up to RAM_IO_CHUNK bytes: large aligned writes are what the block
 * layer and the disk handle best.
 */
#include "snapshot/ram.h"

#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "snapshot/vmstate.h"

#define PAGE         VMSTATE_PAGE_SIZE
#define RAM_IO_CHUNK (8u << 20)

bool page_is_zero(const void *p)
{
    const uint64_t *w = p;
    uint64_t acc = 0;
    for (size_t i = 0; i < PAGE / sizeof(uint64_t); i++) {
        acc |= w[i];
    }
    return acc == 0;
}

static bool bit_get(const uint64_t *map, uint64_t i)
{
    return (map[i / 64] >> (i % 64)) & 1;
}

static void bit_assign(uint64_t *map, uint64_t i, bool v)
{
    if (v) {
        map[i / 64] |= 1ULL << (i % 64);
    } else {
        map[i / 64] &= ~(1ULL << (i % 64));
    }
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
    s->node = node;
    s->ram_offset = ram_offset;
    s->ram = ram;
    s->ram_size = ram_size;
    return 0;
}

void ram_saver_destroy(struct ram_saver *s)
{
    free(s->stored);
    s->stored = NULL;
}

/* Does page i need writing now, and what will it hold afterwards? */
static bool page_needs_write(struct ram_saver *s, uint64_t i, bool *nonzero)
{
    *nonzero = !page_is_zero(s->ram + i * PAGE);
    return *nonzero || bit_get(s->stored, i);
}

static int write_run(struct ram_saver *s, uint64_t first, uint64_t count, struct error **errp)
{
    uint64_t len = count * PAGE;
    if (block_vmstate_write(s->node, s->ram_offset + first * PAGE, s->ram + first * PAGE, len,
                            errp) < 0) {
        error_prepend(errp, "writing guest RAM at 0x%llx", (unsigned long long)(first * PAGE));
        return -1;
    }
    s->bytes_written += len;
    return 0;
}

static void report_progress(struct ram_saver *s, uint64_t *reported, uint64_t upto)
{
    if (s->progress && upto > *reported) {
        s->progress(s->opaque, (upto - *reported) * PAGE);
    }
    *reported = upto;
}

int ram_save_pages(struct ram_saver *s, uint64_t first, uint64_t count, struct error **errp)
{
    uint64_t end = first + count;
    uint64_t reported = first;
    uint64_t run_start = 0, run_len = 0;
    const uint64_t max_run = RAM_IO_CHUNK / PAGE;
    for (uint64_t i = first; i < end; i++) {
        bool nonzero;
        bool write = page_needs_write(s, i, &nonzero);
        if (write) {
            if (run_len == 0) {
                run_start = i;
            }
            run_len++;
            if (nonzero != bit_get(s->stored, i)) {
                s->pages_stored += nonzero ? 1 : -1;
                bit_assign(s->stored, i, nonzero);
            }
        }
        bool flush = run_len && (!write || run_len == max_run || i + 1 == end);
        if (flush) {
            if (s->cancelled && s->cancelled(s->opaque)) {
                error_setg(errp, "the snapshot was cancelled");
                return -1;
            }
            if (write_run(s, run_start, run_len, errp) < 0) {
                return -1;
            }
            run_len = 0;
            report_progress(s, &reported, i + 1);
        }
    }
    report_progress(s, &reported, end);
    return 0;
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
