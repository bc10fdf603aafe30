/*
 * Instant restore: guest RAM comes straight from the snapshot's clusters.
 *
 * Loading maps every cluster run of the vmstate's RAM section MAP_PRIVATE
 * from the image file over guest RAM, maps fresh zero pages where the
 * snapshot stored nothing, and reads only what cannot be mapped (compressed
 * clusters, clusters smaller than a page, -mem-path RAM).  A save lays RAM
 * out in the file as in memory, all-zero clusters as holes, so the runs are
 * few and long; where reading a hole through a mapping would allocate
 * (tmpfs), the holes stay fresh zero pages.  The guest runs at once; pages
 * are read from the page cache on first touch, and a write by the guest
 * copies the page (MAP_PRIVATE), so it never reaches the image.
 *
 * The mapped clusters belong to the snapshot alone, and nothing rewrites a
 * snapshot's clusters in place; they can only change after the snapshot is
 * deleted and they are reused.  So before a snapshot is deleted (delvm,
 * snapshot-delete, a replacing HMP savevm), restore_release() copies every
 * still-mapped data page into private memory first, and makes the pages of
 * its holes fresh zero pages.
 */
#ifndef SNAPVM_SNAPSHOT_RESTORE_H
#define SNAPVM_SNAPSHOT_RESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct block_extent;
struct block_node;
struct machine;
struct ram_packs;

/*
 * Loading RAM is two steps, so that a load can fail without touching the
 * guest: restore_stage() does every read that can fail (the cluster map,
 * the clusters that cannot be mapped -- or all of RAM for -mem-path --
 * into a staging area beside guest RAM) and checks that every mapped run
 * lies inside the image file; guest RAM is untouched.  restore_commit()
 * then puts the staged RAM in place with mmap/mremap/memcpy and no I/O:
 * only the kernel refusing a mapping (ENOMEM) can fail it, and guest RAM
 * is then undefined.  restore_stage_free() in every case.
 */
struct ram_stage {
    struct block_node *node;
    const char *tag;
    char id[128];
    uint64_t ram_offset;           /* vmstate position of guest page 0 */
    const struct ram_packs *packs; /* the snapshot's pack map (pack.h; borrowed), or NULL */
    uint64_t ram_size;
    int fd;       /* the image file to map from; -1: read everything */
    bool whole;   /* buf holds all of RAM */
    uint8_t *buf; /* staging area, ram_size bytes, page i at i * 4096 */
    struct block_extent *extents;
    size_t count;
    bool *mapped; /* per extent: map it (else its bytes are in buf) */
    /* A revert in place (restore_stage_changed): only these pieces change. */
    struct restore_piece *pieces;
    size_t npieces, pieces_cap;
    bool in_place;
    /* The guest's pages that a revert moved out of guest RAM: freed by
     * restore_stage_free, which the caller runs once the guest runs again. */
    uint8_t *parked;
    uint64_t parked_len;
};

/*
 * Revert in place: guest RAM is the snapshot's except for the pages marked
 * in `changed` (the dirty log since the snapshot's instant: the VM last
 * loaded or saved it).  Only those pages are put back, each the cheapest
 * way that is exact:
 *   - RESTORE_FILE: the page lies in a run that this same snapshot's load
 *     mapped MAP_PRIVATE from the image; dropping the guest's private copy
 *     (MADV_DONTNEED) shows the file page again, which is the snapshot's
 *     (a snapshot's clusters never change while it exists);
 *   - RESTORE_ZERO: the snapshot stores nothing there: private anonymous
 *     memory is dropped (reads as zero), -mem-path RAM is cleared;
 *   - RESTORE_COPY: the bytes, read into the staging area now.
 * restore_commit() then applies the pieces without I/O (large FILE and ZERO
 * pieces by swapping mappings, restore.c says why).  If more than half
 * of RAM changed, mapping the snapshot anew is cheaper than reading it:
 * it is then staged as restore_stage() does.
 */
enum restore_piece_kind { RESTORE_FILE, RESTORE_ZERO, RESTORE_COPY };

struct restore_piece {
    uint64_t off, len; /* in guest RAM */
    uint64_t host;     /* RESTORE_FILE: where page `off` lies in the image file */
    enum restore_piece_kind kind;
    bool swapped; /* put back by swapping mappings (restore.c), not page by page */
};

int restore_stage_changed(struct machine *m, struct block_node *node, const char *tag,
                          const char *id, uint64_t ram_offset, const struct ram_packs *packs,
                          const uint64_t *changed, struct ram_stage *st, struct error **errp);

int restore_stage(struct machine *m, struct block_node *node, const char *tag, const char *id,
                  uint64_t ram_offset, const struct ram_packs *packs, struct ram_stage *st,
                  struct error **errp);
int restore_commit(struct machine *m, struct ram_stage *st, struct error **errp);
void restore_stage_free(struct ram_stage *st);

/*
 * Before snapshot `id` on `node` is deleted: if guest RAM maps its clusters,
 * make those pages private copies (data) or fresh zero pages (the holes of
 * all-zero clusters).  Pauses the vCPUs briefly itself.
 */
int restore_release(struct machine *m, struct block_node *node, const char *id,
                    struct error **errp);

/* Is guest RAM private anonymous memory throughout (nothing mapped from an image)? */
bool restore_ram_is_anonymous(struct machine *m);

/* The machine is going away: forget what its RAM maps (main.c, tests). */
void restore_forget(struct machine *m);

#endif
