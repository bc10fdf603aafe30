/*
 * Whole-VM load, all-or-nothing: find the vmstate and check all of it
 * (header, CRCs, and every record -- each vCPU, the VM-wide KVM state,
 * each device -- parsed as its loader will parse it) while the guest runs
 * and before anything is touched; then, with the guest paused, stage RAM,
 * prepare every disk's revert, apply the state, commit the disks and put
 * RAM in place (apply_snapshot says how each failure is undone).
 */
#include "snapshot/snapshot.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "snapshot/describe.h"
#include "snapshot/devstate.h"
#include "snapshot/pack.h"
#include "snapshot/ram.h"
#include "snapshot/restore.h"
#include "snapshot/snapshot-int.h"
#include "util/log.h"

int require_tag_everywhere(const struct snapshot_targets *t, const char *tag, struct error **errp)
{
    for (size_t i = 0; i < t->count; i++) {
        struct block_snapshot_info info;
        if (block_snapshot_find(t->nodes[i], tag, &info) < 0) {
            error_setg(errp, "Snapshot '%s' does not exist on node '%s'%s", tag,
                       block_node_name(t->nodes[i]),
                       t->count > 1 ? " (it must exist on every node of the snapshot)" : "");
            return -1;
        }
    }
    return 0;
}

/*
 * Which node holds the vmstate: the one named by `vmstate`, else the node
 * whose snapshot of this tag carries a vmstate.
 */
int find_vmstate_node(struct load_ctx *ctx, struct error **errp)
{
    const char *tag = ctx->req->tag;
    for (size_t i = 0; i < ctx->targets.count; i++) {
        struct block_node *n = ctx->targets.nodes[i];
        if (ctx->req->vmstate && strcmp(block_node_name(n), ctx->req->vmstate) != 0) {
            continue;
        }
        struct block_snapshot_info info;
        if (block_snapshot_find(n, tag, &info) == 0 && info.vm_state_size > 0) {
            ctx->vmstate = n;
            ctx->vm_info = info;
            return 0;
        }
    }
    if (ctx->req->vmstate) {
        error_setg(errp,
                   "Snapshot '%s' on node '%s' has no vmstate (a disk-only snapshot, such "
                   "as one made by 'qemu-img snapshot -c'): it cannot be loaded into a VM",
                   tag, ctx->req->vmstate);
    } else {
        error_setg(errp,
                   "Snapshot '%s' has no vmstate on any node (a disk-only snapshot, such "
                   "as one made by 'qemu-img snapshot -c'): it cannot be loaded into a VM",
                   tag);
    }
    return -1;
}

/*
 * The snapshots of one tag on the nodes of the set must be one whole-VM
 * snapshot: every node's was taken at the same instant of the guest's
 * clock (a save records one vm-clock on every node).  A tag whose nodes
 * disagree is torn -- a save that died between two nodes' commits, or
 * snapshots made apart (qemu-img snapshot -c on one disk) -- and loading it
 * would mix disks from different instants: refuse it, naming the node.
 */
static int check_one_instant(struct load_ctx *ctx, struct error **errp)
{
    for (size_t i = 0; i < ctx->targets.count; i++) {
        struct block_node *n = ctx->targets.nodes[i];
        struct block_snapshot_info info;
        if (n == ctx->vmstate || block_snapshot_find(n, ctx->req->tag, &info) < 0) {
            continue;
        }
        if (info.vm_clock_nsec != ctx->vm_info.vm_clock_nsec) {
            error_setg(errp,
                       "Snapshot '%s' on node '%s' was not taken at the same instant as the one "
                       "on node '%s' (vm-clock %llu ns, not %llu ns): the snapshot is torn (a "
                       "save interrupted between nodes, or disk snapshots made apart) and "
                       "cannot be loaded as one VM state",
                       ctx->req->tag, block_node_name(n), block_node_name(ctx->vmstate),
                       (unsigned long long)info.vm_clock_nsec,
                       (unsigned long long)ctx->vm_info.vm_clock_nsec);
            return -1;
        }
    }
    return 0;
}

/*
 * The header (covered by its CRC) is the one record of the machine's shape:
 * RAM size, which also fixes where the device section lies, and vCPU count.
 */
static int check_machine_shape(struct load_ctx *ctx, struct error **errp)
{
    uint64_t ram_size;
    machine_ram(ctx->m, &ram_size);
    if (ctx->header.ram_size != ram_size) {
        error_setg(errp, "%s was taken with %llu MiB of RAM, this VM has %llu MiB (-m)", ctx->where,
                   (unsigned long long)(ctx->header.ram_size >> 20),
                   (unsigned long long)(ram_size >> 20));
        return -1;
    }
    if (ctx->header.vcpu_count != (uint32_t)machine_vcpu_count(ctx->m)) {
        error_setg(errp, "%s was taken with %u vCPUs, this VM has %d (-smp)", ctx->where,
                   ctx->header.vcpu_count, machine_vcpu_count(ctx->m));
        return -1;
    }
    return 0;
}

/* Read and check header and device records: nothing is touched yet. */
int read_and_check_vmstate(struct load_ctx *ctx, struct error **errp)
{
    if (check_one_instant(ctx, errp) < 0) {
        return -1;
    }
    const char *tag = ctx->req->tag;
    snprintf(ctx->where, sizeof(ctx->where), "snapshot '%s' on node '%s'", tag,
             block_node_name(ctx->vmstate));
    uint8_t hdr[VMSTATE_HEADER_SIZE] = {0};
    uint64_t hdr_len =
            ctx->vm_info.vm_state_size < sizeof(hdr) ? ctx->vm_info.vm_state_size : sizeof(hdr);
    if (block_snapshot_vmstate_read(ctx->vmstate, tag, 0, hdr, hdr_len, errp) < 0 ||
        vmstate_header_decode(hdr, hdr_len, ctx->vm_info.vm_state_size, &ctx->header, ctx->where,
                              errp) < 0) {
        return -1;
    }
    ctx->devices = malloc(ctx->header.devices_size ? ctx->header.devices_size : 1);
    if (!ctx->devices) {
        error_setg(errp, "%s: out of memory for the device state", ctx->where);
        return -1;
    }
    if (block_snapshot_vmstate_read(ctx->vmstate, tag, ctx->header.devices_offset, ctx->devices,
                                    ctx->header.devices_size, errp) < 0) {
        return -1;
    }
    if (vmstate_crc32(ctx->devices, ctx->header.devices_size) != ctx->header.devices_crc) {
        error_setg(errp, "%s: device state checksum mismatch (the vmstate is corrupt)", ctx->where);
        return -1;
    }
    if (vmstate_records_parse(ctx->devices, ctx->header.devices_size, &ctx->records,
                              &ctx->record_count, ctx->where, errp) < 0) {
        return -1;
    }
    if (check_machine_shape(ctx, errp) < 0 ||
        devstate_check(ctx->m, ctx->records, ctx->record_count, ctx->where, errp) < 0) {
        return -1;
    }
    return ram_packs_read(ctx->vmstate, tag, &ctx->header, ctx->where, &ctx->packs, errp);
}

/*
 * The part with the guest paused, all-or-nothing:
 *
 *   1. stage RAM beside guest RAM (every read that can fail);
 *   2. prepare every node's revert (block_snapshot_goto_prepare);
 *   3. apply the KVM, device and vCPU state, whose records were all checked
 *      before the pause (only KVM can still refuse one: the VM's own state,
 *      taken just before, is put back);
 *   4. commit every node -- the commit point of the disks;
 *   5. put the staged RAM in place (no I/O);
 *   6. finish every node (frees what the old disk state held; cannot fail).
 *
 * A failure in 1-5 undoes everything done so far (an abort re-points a
 * committed node at its old tables), so the guest goes on as it was.  Only
 * an undo that fails itself (an abort's header write, KVM refusing the
 * VM's own state), or step 5 after its first change, leaves the VM changed
 * in part: *half_loaded is then set, and the VM stays stopped (QEMU's rule,
 * docs/snapshots.md).
 */
/* "first error (and then: note)": the first failure stays the headline. */
static void append_note(struct error **errp, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static void append_note(struct error **errp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *note = NULL;
    if (vasprintf(&note, fmt, ap) < 0) {
        abort();
    }
    va_end(ap);
    char *joined = NULL;
    if (asprintf(&joined, "%s (and then: %s)", (*errp)->message, note) < 0) {
        abort();
    }
    free(note);
    free((*errp)->message);
    (*errp)->message = joined;
}

static int apply_snapshot(struct load_ctx *ctx, const struct snapshot_progress *progress,
                          const uint64_t *changed, struct ram_stage *stage, bool *half_loaded,
                          struct error **errp)
{
    const char *tag = ctx->req->tag;
    struct snapshot_targets *t = &ctx->targets;
    struct block_txn *txn[SNAPSHOT_MAX_NODES] = {0};
    struct devstate_backup backup = {0};
    bool applied = false;
    uint64_t ram_size;
    machine_ram(ctx->m, &ram_size);
    progress_total(progress, ram_size);
    if ((changed ? restore_stage_changed(ctx->m, ctx->vmstate, tag, ctx->vm_info.id,
                                         ctx->header.ram_offset, ctx->packs, changed, stage, errp)
                 : restore_stage(ctx->m, ctx->vmstate, tag, ctx->vm_info.id, ctx->header.ram_offset,
                                 ctx->packs, stage, errp)) < 0) {
        return -1;
    }
    for (size_t i = 0; i < t->count; i++) {
        if (block_snapshot_goto_prepare(t->nodes[i], tag, &txn[i], errp) < 0) {
            error_prepend(errp, "reverting node '%s' to snapshot '%s'",
                          block_node_name(t->nodes[i]), tag);
            goto undo;
        }
    }
    if (devstate_backup_take(ctx->m, &backup, errp) < 0) {
        goto undo;
    }
    applied = true;
    if (devstate_apply(ctx->m, ctx->records, ctx->record_count, errp) < 0) {
        goto undo;
    }
    for (size_t i = 0; i < t->count; i++) {
        if (block_snapshot_txn_commit(txn[i], errp) < 0) {
            error_prepend(errp, "reverting node '%s' to snapshot '%s'",
                          block_node_name(t->nodes[i]), tag);
            goto undo;
        }
    }
    if (restore_commit(ctx->m, stage, errp) < 0) {
        /* Guest RAM is neither the old nor the new: nothing to go back to. */
        *half_loaded = true;
        goto undo;
    }
    progress_advance(progress, ram_size);
    for (size_t i = 0; i < t->count; i++) {
        block_snapshot_txn_finish(txn[i]);
    }
    devstate_backup_free(&backup);
    return 0;

undo:
    /* Every later undo still runs when one fails: as little as possible stays changed. */
    for (size_t i = 0; i < t->count; i++) {
        struct error *err = NULL;
        if (txn[i] && block_snapshot_txn_abort(txn[i], &err) < 0) {
            log_error("loadvm: undoing the revert of node '%s': %s", block_node_name(t->nodes[i]),
                      err->message);
            append_note(errp, "node '%s' could not be put back either: %s",
                        block_node_name(t->nodes[i]), err->message);
            error_free(err);
            *half_loaded = true;
        }
    }
    if (applied) {
        struct error *err = NULL;
        if (devstate_backup_restore(ctx->m, &backup, &err) < 0) {
            log_error("loadvm: %s", err->message);
            append_note(errp, "%s", err->message);
            error_free(err);
            *half_loaded = true;
        }
    }
    devstate_backup_free(&backup);
    return -1;
}

int vm_snapshot_load(struct machine *m, const struct snapshot_request *req,
                     const struct snapshot_progress *progress, json_t **result, struct error **errp)
{
    struct load_ctx ctx = {.m = m, .req = req};
    struct description *desc = NULL; /* the snapshot's record (describe.h), if it has one */
    int rc = -1;
    if (check_tag(req->tag, errp) < 0 ||
        describe_select_load(m, req, &ctx.targets, &desc, errp) < 0 ||
        require_tag_everywhere(&ctx.targets, req->tag, errp) < 0 ||
        find_vmstate_node(&ctx, errp) < 0 || read_and_check_vmstate(&ctx, errp) < 0) {
        goto out;
    }
    /*
     * Still at this snapshot but for the pages changed since (the VM last
     * saved or loaded it): a revert in place puts back only those
     * (restore.h), and the base of incremental saves stays.  Else the old
     * base goes and RAM is loaded whole.  (One sync, under the pause: a
     * sync before it as well would cost the load more than it saves the
     * pause.)
     */
    uint64_t *changed = snapshot_incr_changed(m, ctx.vmstate, ctx.vm_info.id);
    if (!changed) {
        snapshot_incr_before_load(m);
    }
    if (machine_snapshot_pause(m, RUN_STATE_RESTORE_VM, errp) < 0) {
        if (changed) {
            snapshot_incr_forget(m);
            free(changed);
        }
        goto out;
    }
    bool half_loaded = false;
    struct error *err = NULL;
    struct ram_stage stage = {0}; /* freed once the guest runs: that takes time (restore.h) */
    /* In place: the rest of the marks, up to this instant (the vCPUs are
     * parked); the count restarts here. */
    rc = changed ? machine_dirty_log_sync(m, changed, &err) : 0;
    if (rc == 0) {
        rc = apply_snapshot(&ctx, progress, changed, &stage, &half_loaded, &err);
    }
    /* RAM is the snapshot's now: track changes from this instant on (save.c). */
    bool tracking = rc == 0 && !changed && snapshot_incr_loaded(m, NULL) == 0;
    /* The machine keeps the cause, for the error of a later cont. */
    machine_snapshot_resume(m, half_loaded ? err->message : NULL);
    restore_stage_free(&stage);
    if (changed) {
        if (rc < 0) {
            snapshot_incr_forget(m); /* the marks taken are gone */
        }
        free(changed);
    } else {
        snapshot_incr_after_load(m, tracking ? ctx.vmstate : NULL, req->tag, ctx.vm_info.id,
                                 ctx.header.ram_offset, ctx.packs);
        ctx.packs = NULL; /* the base's now */
    }
    if (rc < 0 && half_loaded) {
        error_prepend(&err, "the VM is stopped, half-loaded (load a snapshot again, or "
                            "system_reset it, then cont)");
    }
    if (rc < 0) {
        error_propagate(errp, err);
    }
    if (rc == 0) {
        describe_set_current(m, &ctx.targets, desc); /* the VM is at it now */
        *result = json_pack("{s:s, s:s, s:o}", "tag", req->tag, "vmstate",
                            block_node_name(ctx.vmstate), "devices", node_names(&ctx.targets));
    }
out:
    describe_free(desc);
    free(ctx.records);
    free(ctx.devices);
    ram_packs_free(ctx.packs);
    return rc;
}
