/*
 * Whole-VM snapshots: save, load and delete the complete state of a VM
 * (vCPUs, KVM's irqchip/PIT/clock, devices, RAM and the disks of the chosen
 * nodes, all at one instant) inside its qcow2 images.
 *
 * These functions run on a worker thread (a job, or the worker behind a
 * deferred savevm reply), never on the monitor thread.  Only one snapshot
 * operation runs at a time per machine.
 *
 * The rule that every function here keeps: a failed operation changes
 * nothing.  Everything that can be checked is checked before any state is
 * touched; a failed save leaves no partial snapshot and no leaked clusters.
 */
#ifndef SNAPVM_SNAPSHOT_SNAPSHOT_H
#define SNAPVM_SNAPSHOT_SNAPSHOT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "snapshot/select.h"
#include "util/error.h"

struct machine;

struct snapshot_request {
    enum snapshot_api api;
    const char *tag;
    const char *vmstate;         /* may be NULL */
    struct name_list nodes;      /* `exclude` (seed API) or `devices` (job API) */
    bool replace;                /* HMP savevm: an existing tag is replaced */
    enum snapshot_origin origin; /* who asked: errors suggest only what it can do */
};

/* Progress and cancellation hooks (all optional). */
struct snapshot_progress {
    void (*set_total)(void *opaque, uint64_t total);
    void (*advance)(void *opaque, uint64_t bytes);
    bool (*cancelled)(void *opaque);
    void *opaque;
};

/*
 * Each returns 0 and sets *result (a new JSON object describing what was
 * done: the vmstate node, the nodes, ...), or -1 with *errp set.
 */
int vm_snapshot_save(struct machine *m, const struct snapshot_request *req,
                     const struct snapshot_progress *progress, json_t **result,
                     struct error **errp);
int vm_snapshot_load(struct machine *m, const struct snapshot_request *req,
                     const struct snapshot_progress *progress, json_t **result,
                     struct error **errp);
int vm_snapshot_delete(struct machine *m, const struct snapshot_request *req, json_t **result,
                       struct error **errp);

/*
 * The machine is about to be freed: drop what the snapshot layer keeps
 * about it (the record of RAM mapped from images by instant restore).
 */
void vm_snapshot_forget(struct machine *m);

/* The VM-level snapshot list (query-snapshots). */
json_t *vm_snapshot_query(struct machine *m, struct error **errp);

#endif
