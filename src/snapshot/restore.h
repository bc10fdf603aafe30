/*
 * Instant restore: guest RAM comes straight from the snapshot's clusters.
 *
 * Loading maps every cluster run of the vmstate's RAM section MAP_PRIVATE
 * from the image file over guest RAM, maps fresh zero pages where the
 * snapshot stored nothing, and reads only what cannot be mapped (compressed
 * clusters, clusters smaller than a page, -mem-path RAM).  The guest runs at
 * once; pages are read from the page cache on first touch, and a write by
 * the guest copies the page (MAP_PRIVATE), so it never reaches the image.
 *
 * The mapped clusters belong to the snapshot alone, and nothing rewrites a
 * snapshot's clusters in place; they can only change after the snapshot is
 * deleted and they are reused.  So before a snapshot is deleted (delvm,
 * snapshot-delete, a replacing HMP savevm), restore_release() copies every
 * still-mapped page into private memory first.
 */
#ifndef SNAPVM_SNAPSHOT_RESTORE_H
#define SNAPVM_SNAPSHOT_RESTORE_H

#include <stdint.h>

#include "util/error.h"

struct block_node;
struct machine;

/*
 * Fill guest RAM (vCPUs paused) from snapshot `tag` (whose id is `id`) on
 * `node`, whose RAM section starts at vmstate position `ram_offset`.
 */
int restore_ram(struct machine *m, struct block_node *node, const char *tag, const char *id,
                uint64_t ram_offset, struct error **errp);

/*
 * Before snapshot `id` on `node` is deleted: if guest RAM maps its clusters,
 * make those pages private copies.  Safe with vCPUs running.
 */
int restore_release(struct machine *m, struct block_node *node, const char *id,
                    struct error **errp);

/* The machine is going away: forget what its RAM maps (main.c, tests). */
void restore_forget(struct machine *m);

#endif
