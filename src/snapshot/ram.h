/*
 * Guest RAM into and out of the vmstate RAM section (page i at
 * ram_offset + i * 4096, see vmstate.h).
 *
 * Saving skips all-zero pages: they are never written, and the image keeps
 * them unallocated (qcow2 reads unallocated clusters as zeros).  A saver
 * remembers which pages it stored, so a live save can rewrite a page that
 * was dirtied after it was stored, including one that became all zero.
 */
#ifndef SNAPVM_SNAPSHOT_RAM_H
#define SNAPVM_SNAPSHOT_RAM_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

struct block_node;

struct ram_saver {
    struct block_node *node;
    uint64_t ram_offset; /* vmstate position of guest page 0 */
    const uint8_t *ram;
    uint64_t ram_size;
    uint64_t *stored;       /* bitmap: page holds non-zero data in the image */
    uint64_t pages_stored;  /* pages currently non-zero in the image */
    uint64_t bytes_written; /* everything written, rewrites included */
    /*
     * Optional: called as pages are processed, with the bytes of guest RAM
     * dealt with since the last call (written or skipped as zero), so that
     * progress reaches the RAM size whatever the share of zero pages.
     */
    void (*progress)(void *opaque, uint64_t bytes);
    /* Optional: polled between writes; true aborts the save. */
    bool (*cancelled)(void *opaque);
    void *opaque;
};

int ram_saver_init(struct ram_saver *s, struct block_node *node, uint64_t ram_offset,
                   const uint8_t *ram, uint64_t ram_size, struct error **errp);
void ram_saver_destroy(struct ram_saver *s);

/*
 * Store pages [first, first + count).  Non-zero pages are written; a zero
 * page is written only if an earlier, non-zero version of it was stored.
 */
int ram_save_pages(struct ram_saver *s, uint64_t first, uint64_t count, struct error **errp);

/* Read the RAM section of snapshot `tag` on `node` into guest RAM. */
int ram_load(struct block_node *node, const char *tag, uint64_t ram_offset, uint8_t *ram,
             uint64_t ram_size, struct error **errp);

/* True if the 4096 bytes at p are all zero. */
bool page_is_zero(const void *p);

#endif
