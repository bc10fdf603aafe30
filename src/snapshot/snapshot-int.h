/*
 * What the whole-VM snapshot operations share (internal to src/snapshot):
 * tag checks, progress hooks, and the load checks that query-snapshots reuses to say
 * whether a snapshot can be loaded.  save.c, load.c, delete (snapshot.c)
 * and query.c each own one operation.
 */
#ifndef SNAPVM_SNAPSHOT_SNAPSHOT_INT_H
#define SNAPVM_SNAPSHOT_SNAPSHOT_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"
#include "machine/machine.h"
#include "snapshot/snapshot.h"
#include "snapshot/vmstate.h"

struct block_node;

#define TAG_MAX 255

int check_tag(const char *tag, struct error **errp);
/* Delete exactly the snapshot with this id (releasing RAM mapped from it). */
int delete_by_id(struct machine *m, struct block_node *node, const char *id, struct error **errp);
json_t *node_names(const struct snapshot_targets *t);
void progress_total(const struct snapshot_progress *p, uint64_t total);
void progress_advance(const struct snapshot_progress *p, uint64_t bytes);

/* ---- load checks, shared with query-snapshots ---- */

struct load_ctx {
    struct machine *m;
    const struct snapshot_request *req;
    struct snapshot_targets targets;
    struct block_node *vmstate;
    struct block_snapshot_info vm_info;
    struct vmstate_header header;
    uint8_t *devices;
    struct vmstate_record *records;
    size_t record_count;
    char where[512];
};

int require_tag_everywhere(const struct snapshot_targets *t, const char *tag, struct error **errp);
/* Which node holds the vmstate: `vmstate` if given, else the node whose snapshot has one. */
int find_vmstate_node(struct load_ctx *ctx, struct error **errp);
/* Read and check the header and every device record; nothing is touched. */
int read_and_check_vmstate(struct load_ctx *ctx, struct error **errp);

#endif
