/*
 * Whole-VM save: the live pre-copy of RAM into the vmstate area, the final
 * pass under a pause of milliseconds (last dirty pages, device and vCPU
 * state, header), and the block snapshots on every node of the set.
 */
#include "snapshot/snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#include "block/block.h"
#include "snapshot/describe.h"
#include "snapshot/devstate.h"
#include "snapshot/pack.h"
#include "snapshot/ram.h"
#include "snapshot/restore.h"
#include "snapshot/snapshot-int.h"
#include "util/buf.h"
#include "util/log.h"

static int check_tag_free(const struct snapshot_targets *t, const char *tag, bool replace,
                          struct error **errp)
{
    if (replace) {
        return 0;
    }
    for (size_t i = 0; i < t->count; i++) {
        struct block_snapshot_info info;
        if (block_snapshot_find(t->nodes[i], tag, &info) == 0) {
            error_setg(errp,
                       "Snapshot '%s' already exists on node '%s'; delete it first or choose "
                       "another tag",
                       tag, block_node_name(t->nodes[i]));
            return -1;
        }
    }
    return 0;
}

/*
 * Live save: dirty-log pre-copy, with dirtied pages rewritten in place.
 *
 * Why pre-copy rather than userfaultfd write-protect copy-on-write: the
 * vmstate's fixed RAM layout makes a rewrite an overwrite of the same
 * clusters (no extra space, no reordering), KVM's dirty log also covers
 * RAM backed by a shared -mem-path file or mapped from an image (where
 * write-protect faults are not available for every backing), and the
 * writer never sits in the guest's fault path.  The cost is a final pass
 * under pause; it is bounded by stopping the pre-copy once the dirty set
 * is small, and the bulk of the data is made durable (block_flush) before
 * the pause, so the flushes inside it only cover metadata and the last
 * pages.
 *
 * Point-in-time consistency: every page is written at least once, and
 * every write to a page after it was written -- by a vCPU (KVM's dirty log)
 * or by a device model (the machine's own dirty map) -- marks it dirty.
 * The final pass, with every vCPU paused, rewrites all pages still marked,
 * so the RAM section equals guest RAM at the instant of the pause, which
 * is also the instant of the device, vCPU and disk state.
 */
#define PRECOPY_MAX_PASSES  16
#define PRECOPY_FINAL_PAGES 256 /* 1 MiB: few enough to write under pause */

struct save_ctx {
    struct machine *m;
    const struct snapshot_request *req;
    const struct snapshot_progress *progress;
    struct snapshot_targets targets;
    struct byte_buf devices;
    struct description *description; /* the record written with the vmstate (describe.h) */
    struct vmstate_header header;
    uint8_t *ram;
    uint64_t ram_size;
    struct ram_saver saver;
    uint64_t *dirty; /* pages written since they were last stored */
    size_t dirty_words;
    uint64_t progress_total;
    uint64_t bytes_written;
    struct incr_base *base; /* the snapshot this save starts from (NULL: a full save) */
    char vmstate_id[128];   /* the new snapshot's id on the vmstate node */
};

/*
 * Incremental saves: after a save or a load, the next save writes only what
 * changed since.
 *
 * The state between two saves (a struct incr_base per machine): the
 * snapshot the VM last saved or loaded (its node and id), KVM's dirty log
 * and the device models' dirty map left on since that instant, and which
 * pages that snapshot stores non-zero.  The active vmstate area of its node
 * shares that snapshot's clusters (block_vmstate_share: one qcow2 reference
 * each, set up right after the save or load).  The next save then has
 * nothing to copy in a first pass: the clusters holding a page dirtied
 * since are rebuilt from guest RAM into new clusters (a shared cluster is
 * replaced in the active L2 table, never written), the other clusters stay
 * shared, and the new snapshot takes over the area as always -- sharing
 * with its parent by refcount, complete by itself.  Deleting either
 * snapshot only drops references; no snapshot is ever a delta of another.
 *
 * Why this is still one instant: the base equals guest RAM at its own
 * instant (a save's final pass, or a load, both with the vCPUs paused and
 * the dirty log on from then), and every write to RAM after that instant,
 * by a vCPU or a device model, marks its page.  So "base + every marked
 * cluster rebuilt from RAM" equals RAM at the moment it is read, which is
 * exactly the full pass's guarantee; the live rounds and the final pass
 * under pause then proceed as for a full save.
 *
 * Why it is crash safe: the sharing is its own small transaction (raise
 * refcounts, flush, commit by the active L1 write: a crash leaks at most),
 * and the save's writes to shared clusters go to new clusters under the
 * ordering of the block layer's RAM writer; the snapshot create is qcow2's
 * transaction, unchanged.  A crash at any point leaves every existing
 * snapshot intact and the image checkable.
 *
 * When the base is unusable -- the area no longer shares it exactly
 * (block_vmstate_shares: a failed save discarded it, the snapshot was
 * deleted), or the save goes to another node -- the save is a full one
 * and the stale area is discarded first.
 */
struct incr_base {
    struct machine *m;
    struct block_node *node;
    char id[128];
    uint64_t *stored; /* pages the base stores non-zero (ram_saver's map) */
    uint64_t pages_stored;
    struct ram_packs *packs; /* the base's pack map (NULL: none) */
    struct incr_base *next;
};

static pthread_mutex_t bases_lock = PTHREAD_MUTEX_INITIALIZER;
static struct incr_base *bases;

/* Detach the machine's base (the caller owns it), or NULL. */
static struct incr_base *base_take(struct machine *m)
{
    pthread_mutex_lock(&bases_lock);
    struct incr_base *b = NULL;
    for (struct incr_base **pp = &bases; *pp; pp = &(*pp)->next) {
        if ((*pp)->m == m) {
            b = *pp;
            *pp = b->next;
            b->next = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&bases_lock);
    return b;
}

static void base_free(struct incr_base *b)
{
    if (b) {
        free(b->stored);
        ram_packs_free(b->packs);
        free(b);
    }
}

/*
 * Record `id` on `node` as the machine's base, its area sharing the
 * snapshot's clusters.  Called with the dirty log on since the snapshot's
 * instant; on failure the log goes off (the next save is a full one).
 */
static void base_set(struct machine *m, struct block_node *node, const char *id, uint64_t *stored,
                     uint64_t pages_stored, struct ram_packs *packs)
{
    struct error *err = NULL;
    struct incr_base *b = calloc(1, sizeof(*b));
    if (!b || block_vmstate_share(node, id, &err) < 0) {
        if (err) {
            log_warn("the next save will be a full one: %s", err->message);
            error_free(err);
        }
        free(b);
        free(stored);
        ram_packs_free(packs);
        machine_dirty_log_stop(m);
        return;
    }
    *b = (struct incr_base){
            .m = m, .node = node, .stored = stored, .pages_stored = pages_stored, .packs = packs};
    snprintf(b->id, sizeof(b->id), "%s", id);
    pthread_mutex_lock(&bases_lock);
    b->next = bases;
    bases = b;
    pthread_mutex_unlock(&bases_lock);
}

/* Drop the machine's base: dirty log off, its node's shared area freed. */
static void base_drop(struct machine *m, struct incr_base *b)
{
    if (!b) {
        return;
    }
    machine_dirty_log_stop(m);
    block_vmstate_discard(b->node, NULL);
    base_free(b);
}

void snapshot_incr_forget(struct machine *m)
{
    /* No later save can use it: leave the image without the extra references. */
    struct incr_base *b = base_take(m);
    if (b) {
        machine_dirty_log_stop(m); /* on exactly while there is a base */
        block_vmstate_discard(b->node, NULL);
    }
    base_free(b);
}

void snapshot_incr_release(struct machine *m, struct block_node *node, const char *id)
{
    /*
     * Deleting the base: the area lets go of its clusters first.  Were it
     * to keep them, the delete would leave them referenced by the active
     * L1 alone, whose COPIED flags must then be set again -- and a power cut
     * between that refcount update and those flags reads as corruption to
     * qemu-img check.  The next save is a full one.
     */
    struct incr_base *b = base_take(m);
    if (b && (b->node != node || strcmp(b->id, id) != 0)) {
        pthread_mutex_lock(&bases_lock);
        b->next = bases;
        bases = b;
        pthread_mutex_unlock(&bases_lock);
        return;
    }
    base_drop(m, b);
}

uint64_t *snapshot_incr_changed(struct machine *m, struct block_node *node, const char *id)
{
    pthread_mutex_lock(&bases_lock);
    bool at = false;
    for (struct incr_base *b = bases; b; b = b->next) {
        if (b->m == m) {
            at = b->node == node && strcmp(b->id, id) == 0;
            break;
        }
    }
    pthread_mutex_unlock(&bases_lock);
    if (!at || !block_vmstate_shares(node, id)) {
        log_debug("load of snapshot %s: not in place (%s)", id,
                  at ? "the vmstate area no longer shares it" : "not the VM's base");
        return NULL;
    }
    uint64_t *changed = calloc(machine_dirty_bitmap_words(m), sizeof(uint64_t));
    if (!changed) {
        abort();
    }
    return changed;
}

void snapshot_incr_before_load(struct machine *m)
{
    base_drop(m, base_take(m));
    /* Turned on now, with the guest running: turning it on write-protects
     * all of RAM, too slow for the load's pause at 8 GiB. */
    machine_dirty_log_start(m, NULL);
}

int snapshot_incr_loaded(struct machine *m, struct error **errp)
{
    /* The load's instant: what was marked before it is forgotten. */
    uint64_t *scratch = calloc(machine_dirty_bitmap_words(m), sizeof(uint64_t));
    if (!scratch) {
        error_setg(errp, "out of memory for the dirty-page map");
        return -1;
    }
    int rc = machine_dirty_log_sync(m, scratch, errp);
    free(scratch);
    return rc;
}

void snapshot_incr_after_load(struct machine *m, struct block_node *node, const char *tag,
                              const char *id, uint64_t ram_offset, struct ram_packs *packs)
{
    uint32_t cs = node ? block_node_cluster_size(node) : 0;
    if (!node || (packs && packs->unit != cs / VMSTATE_PAGE_SIZE)) {
        /* The load failed, or its map is not in this node's clusters: no base. */
        ram_packs_free(packs);
        machine_dirty_log_stop(m);
        return;
    }
    uint64_t ram_size, pages = 0;
    machine_ram(m, &ram_size);
    /* A goto keeps the active vmstate area: whatever a failed save left
     * there goes before the area shares the loaded snapshot. */
    block_vmstate_discard(node, NULL);
    uint64_t *stored = ram_stored_map(node, tag, ram_offset, packs, ram_size, &pages);
    if (!stored) {
        ram_packs_free(packs);
        machine_dirty_log_stop(m);
        return;
    }
    base_set(m, node, id, stored, pages, packs);
}

/*
 * Start tracking for this save: from the base if it is usable (dirty log
 * already on since its instant), else from scratch.
 */
static int start_tracking(struct save_ctx *ctx, struct error **errp)
{
    struct incr_base *b = base_take(ctx->m);
    if (b && b->node == ctx->targets.vmstate && block_vmstate_shares(b->node, b->id)) {
        free(ctx->saver.stored);
        ctx->saver.stored = b->stored;
        ctx->saver.pages_stored = b->pages_stored;
        b->stored = NULL;
        /* The base's map goes on (its clusters stay packed until rewritten), or none. */
        ram_packs_free(ctx->saver.packs);
        ctx->saver.packs = b->packs;
        b->packs = NULL;
        ctx->base = b;
        log_debug("live save: incremental, from snapshot %s", b->id);
        return 0;
    }
    base_drop(ctx->m, b);
    machine_dirty_log_stop(ctx->m); /* left on by a load that went wrong, say */
    /*
     * A full save starts from an empty area: whatever an earlier failed
     * save could not discard (its discard itself failed, say on a full
     * disk) goes now, or this save fails cleanly.
     */
    if (block_vmstate_discard(ctx->targets.vmstate, errp) < 0) {
        error_prepend(errp, "clearing the vmstate area of node '%s'",
                      block_node_name(ctx->targets.vmstate));
        return -1;
    }
    return machine_dirty_log_start(ctx->m, errp);
}

static void ram_progress(void *opaque, uint64_t bytes)
{
    struct save_ctx *ctx = opaque;
    progress_advance(ctx->progress, bytes);
}

static bool ram_cancelled(void *opaque)
{
    struct save_ctx *ctx = opaque;
    return ctx->progress && ctx->progress->cancelled &&
           ctx->progress->cancelled(ctx->progress->opaque);
}

static uint64_t count_dirty(const struct save_ctx *ctx)
{
    uint64_t n = 0;
    for (size_t i = 0; i < ctx->dirty_words; i++) {
        n += (uint64_t)__builtin_popcountll(ctx->dirty[i]);
    }
    return n;
}

/* Rewrite every cluster holding a page marked dirty, and clear the marks. */
static int rewrite_dirty(struct save_ctx *ctx, struct error **errp)
{
    ctx->progress_total += ram_dirty_cluster_pages(&ctx->saver, ctx->dirty) * VMSTATE_PAGE_SIZE;
    progress_total(ctx->progress, ctx->progress_total);
    if (ram_save_dirty(&ctx->saver, ctx->dirty, errp) < 0) {
        return -1;
    }
    memset(ctx->dirty, 0, ctx->dirty_words * sizeof(uint64_t));
    return 0;
}

static int sync_dirty(struct save_ctx *ctx, struct error **errp)
{
    return machine_dirty_log_sync(ctx->m, ctx->dirty, errp);
}

static int flush_vmstate(struct save_ctx *ctx, struct error **errp)
{
    if (block_flush(ctx->targets.vmstate, errp) < 0) {
        error_prepend(errp, "flushing the vmstate on node '%s'",
                      block_node_name(ctx->targets.vmstate));
        return -1;
    }
    return 0;
}

/* Rewrite what the guest dirtied until what is left is small. */
static int converge(struct save_ctx *ctx, struct error **errp)
{
    for (int pass = 0; pass < PRECOPY_MAX_PASSES; pass++) {
        if (sync_dirty(ctx, errp) < 0) {
            return -1;
        }
        uint64_t dirty = count_dirty(ctx);
        log_debug("live save: pass %d, %llu dirty pages", pass, (unsigned long long)dirty);
        if (dirty <= PRECOPY_FINAL_PAGES) {
            return 0; /* left marked for the final pass */
        }
        if (rewrite_dirty(ctx, errp) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Room reserved for the device section: far more than a machine needs. */
static uint64_t device_section_reserve(struct save_ctx *ctx)
{
    return (64u << 10) + (uint64_t)machine_vcpu_count(ctx->m) * (32u << 10);
}

/* Zeros at vmstate [pos, pos + len): what reserves a section's clusters. */
static int write_zeros(struct save_ctx *ctx, uint64_t pos, uint64_t len, struct error **errp)
{
    void *zeros = calloc(1, len);
    if (!zeros) {
        error_setg(errp, "out of memory for %llu bytes of vmstate", (unsigned long long)len);
        return -1;
    }
    int rc = block_vmstate_write(ctx->targets.vmstate, pos, zeros, len, errp);
    free(zeros);
    return rc;
}

/*
 * Allocate the clusters of the header and of the device section while the
 * guest runs: under the pause they are then overwritten, not allocated (an
 * allocation costs the image a metadata flush).
 */
static int reserve_metadata(struct save_ctx *ctx, struct error **errp)
{
    if (write_zeros(ctx, vmstate_devices_offset(ctx->ram_size), device_section_reserve(ctx), errp) <
        0) {
        return -1;
    }
    return write_zeros(ctx, 0, VMSTATE_HEADER_SIZE, errp);
}

/*
 * The pack map's clusters, allocated while the guest runs, as above: its
 * place is known once the first pass has packed what it packs, and it is
 * as long as it can get (later writes only unpack clusters).
 */
static int reserve_map(struct save_ctx *ctx, struct error **errp)
{
    const struct ram_packs *p = ctx->saver.packs;
    uint64_t len = p ? p->packed * vmstate_map_entry_size(p->unit) : 0;
    return len ? write_zeros(ctx, p->offset + p->slots * VMSTATE_PAGE_SIZE, len, errp) : 0;
}

/*
 * Everything that happens while the guest runs: the first full pass, then
 * rounds of "flush what was written, rewrite what the guest dirtied
 * meanwhile" until a round rewrites little.  What is left for the pause is
 * then a few pages, and the flushes under the pause (the block snapshot's
 * metadata updates flush the image) find almost no data to write.
 */
#define PRECOPY_MAX_ROUNDS   10
#define PRECOPY_UNFLUSHED_OK (8u << 20)

static int precopy(struct save_ctx *ctx, struct error **errp)
{
    if (ctx->base) {
        /*
         * Incremental: the first pass is the clusters changed since the
         * base; progress counts all of RAM, the shared rest as done at once.
         */
        if (reserve_metadata(ctx, errp) < 0 || sync_dirty(ctx, errp) < 0) {
            return -1;
        }
        uint64_t changed = ram_dirty_cluster_pages(&ctx->saver, ctx->dirty) * VMSTATE_PAGE_SIZE;
        ctx->progress_total = ctx->ram_size;
        progress_total(ctx->progress, ctx->progress_total);
        progress_advance(ctx->progress, ctx->ram_size - changed);
        if (ram_save_dirty(&ctx->saver, ctx->dirty, errp) < 0) {
            return -1;
        }
        memset(ctx->dirty, 0, ctx->dirty_words * sizeof(uint64_t));
    } else {
        ctx->progress_total = ctx->ram_size;
        progress_total(ctx->progress, ctx->progress_total);
        if (reserve_metadata(ctx, errp) < 0 ||
            ram_save_pages(&ctx->saver, 0, ctx->ram_size / VMSTATE_PAGE_SIZE, errp) < 0) {
            return -1;
        }
    }
    if (reserve_map(ctx, errp) < 0) {
        return -1;
    }
    log_debug("live save: first pass written (%llu bytes; %llu pages known zero, not read; "
              "%llu clusters packed)",
              (unsigned long long)ctx->saver.bytes_written,
              (unsigned long long)ctx->saver.pages_known_zero,
              (unsigned long long)(ctx->saver.packs ? ctx->saver.packs->packed : 0));
    for (int round = 0; round < PRECOPY_MAX_ROUNDS; round++) {
        uint64_t before = ctx->saver.bytes_written;
        if (flush_vmstate(ctx, errp) < 0) {
            return -1;
        }
        log_debug("live save: flushed");
        if (converge(ctx, errp) < 0) {
            return -1;
        }
        if (ctx->saver.bytes_written - before <= PRECOPY_UNFLUSHED_OK) {
            break;
        }
    }
    return 0;
}

/* The device section and the header, written last. */
static int write_devices_and_header(struct save_ctx *ctx, struct error **errp)
{
    struct block_node *node = ctx->targets.vmstate;
    struct vmstate_header *h = &ctx->header;
    h->page_size = VMSTATE_PAGE_SIZE;
    h->ram_size = ctx->ram_size;
    h->vcpu_count = (uint32_t)machine_vcpu_count(ctx->m);
    h->vm_clock_ns = machine_vm_clock_ns(ctx->m);
    h->ram_offset = VMSTATE_RAM_OFFSET;
    h->devices_offset = vmstate_devices_offset(ctx->ram_size);
    h->devices_size = ctx->devices.len;
    h->devices_crc = vmstate_crc32(ctx->devices.data, ctx->devices.len);
    h->ram_pages_written = ctx->saver.pages_stored;
    const struct ram_packs *p = ctx->saver.packs;
    uint8_t *map = NULL;
    uint64_t map_len = 0;
    if (p && p->slots) { /* a pack area (this save's, or the base's): version 3 */
        map = ram_packs_encode(p, &map_len);
        ram_packs_header(p, h, map, map_len);
    }
    if (describe_write(ctx->description, node, h, errp) < 0) {
        free(map);
        return -1;
    }
    uint8_t hdr[VMSTATE_HEADER_SIZE];
    vmstate_header_encode(h, hdr);
    int rc =
            block_vmstate_write(node, h->devices_offset, ctx->devices.data, ctx->devices.len, errp);
    if (rc == 0 && map_len) {
        rc = block_vmstate_write(node, h->map_offset, map, map_len, errp);
    }
    if (rc == 0) {
        rc = block_vmstate_write(node, 0, hdr, sizeof(hdr), errp);
    }
    free(map);
    if (rc < 0) {
        error_prepend(errp, "writing the vmstate to node '%s'", block_node_name(node));
        return -1;
    }
    ctx->bytes_written =
            ctx->saver.bytes_written + sizeof(hdr) + ctx->devices.len + h->desc_size + map_len;
    return 0;
}

/*
 * The block snapshots on every node, all-or-nothing (create_everywhere).
 * Replacing a tag (HMP savevm): qcow2 tags are unique per image; the old
 * snapshot is replaced at the same commit point as the new one is added,
 * so a failure or a crash at any instant leaves one of the two.
 */
static int create_block_snapshots(struct save_ctx *ctx, struct error **errp)
{
    if (create_everywhere(ctx->m, &ctx->targets, ctx->req->tag, vmstate_total_size(&ctx->header),
                          ctx->header.vm_clock_ns, ctx->req->replace, errp) < 0) {
        return -1;
    }
    /* Its id, for the next save's base (incremental saves). */
    struct block_snapshot_info info;
    if (block_snapshot_find(ctx->targets.vmstate, ctx->req->tag, &info) == 0) {
        snprintf(ctx->vmstate_id, sizeof(ctx->vmstate_id), "%s", info.id);
    }
    return 0;
}

/* Everything that happens with the guest paused: one instant for all state. */
static int final_pass(struct save_ctx *ctx, json_t **result, struct error **errp)
{
    struct snapshot_targets *t = &ctx->targets;
    if (sync_dirty(ctx, errp) < 0) {
        return -1;
    }
    uint64_t dirty = count_dirty(ctx);
    log_debug("live save: %llu pages left for the final pass", (unsigned long long)dirty);
    if (rewrite_dirty(ctx, errp) < 0) {
        return -1;
    }
    log_debug("live save: final pages written");
    if (devstate_capture(ctx->m, &ctx->devices, errp) < 0) {
        return -1;
    }
    log_debug("live save: device state captured");
    if (write_devices_and_header(ctx, errp) < 0) {
        return -1;
    }
    log_debug("live save: device state written");
    if (create_block_snapshots(ctx, errp) < 0) {
        return -1;
    }
    log_debug("live save: block snapshots created");
    *result = json_pack("{s:s, s:s, s:o, s:b, s:I, s:I}", "tag", ctx->req->tag, "vmstate",
                        block_node_name(t->vmstate), "devices", node_names(t), "vmstate-defaulted",
                        t->vmstate_defaulted, "vm-state-size",
                        (json_int_t)vmstate_total_size(&ctx->header), "bytes-written",
                        (json_int_t)ctx->bytes_written);
    return 0;
}

static int save_ctx_init(struct save_ctx *ctx, struct error **errp)
{
    ctx->ram = machine_ram(ctx->m, &ctx->ram_size);
    buf_init(&ctx->devices);
    ctx->dirty_words = machine_dirty_bitmap_words(ctx->m);
    ctx->dirty = calloc(ctx->dirty_words, sizeof(uint64_t));
    if (!ctx->dirty) {
        error_setg(errp, "out of memory for the dirty-page map");
        return -1;
    }
    if (ram_saver_init(&ctx->saver, ctx->targets.vmstate, VMSTATE_RAM_OFFSET, ctx->ram,
                       ctx->ram_size, errp) < 0) {
        free(ctx->dirty);
        return -1;
    }
    ram_saver_find_holes(&ctx->saver, machine_ram_file(ctx->m), restore_ram_is_anonymous(ctx->m));
    ctx->saver.progress = ram_progress;
    ctx->saver.cancelled = ram_cancelled;
    ctx->saver.opaque = ctx;
    return 0;
}

static void save_ctx_destroy(struct save_ctx *ctx)
{
    ram_saver_destroy(&ctx->saver);
    free(ctx->dirty);
    buf_free(&ctx->devices);
    describe_free(ctx->description);
}

int vm_snapshot_save(struct machine *m, const struct snapshot_request *req,
                     const struct snapshot_progress *progress, json_t **result, struct error **errp)
{
    struct save_ctx ctx = {.m = m, .req = req, .progress = progress};
    if (check_tag(req->tag, errp) < 0 || describe_select_save(m, req, &ctx.targets, errp) < 0 ||
        check_tag_free(&ctx.targets, req->tag, req->replace, errp) < 0 ||
        save_ctx_init(&ctx, errp) < 0) {
        return -1;
    }
    int rc = -1;
    /* The record reads the images (the current marker, its ancestors): before the pause. */
    ctx.description = describe_capture(m, &ctx.targets, req->tag, errp);
    if (!ctx.description || start_tracking(&ctx, errp) < 0) {
        goto out;
    }
    if (precopy(&ctx, errp) == 0) {
        if (machine_snapshot_pause(m, RUN_STATE_SAVE_VM, errp) == 0) {
            rc = final_pass(&ctx, result, errp);
            machine_snapshot_resume(m, NULL);
        }
        if (rc == 0) {
            /* After the commit and outside the pause: it never fails the save. */
            describe_set_current(m, &ctx.targets, ctx.description);
        }
    }
    if (rc == 0) {
        /* The new snapshot is the next save's base; the dirty log stays on. */
        base_set(m, ctx.targets.vmstate, ctx.vmstate_id, ctx.saver.stored, ctx.saver.pages_stored,
                 ctx.saver.packs);
        ctx.saver.stored = NULL;
        ctx.saver.packs = NULL;
    } else {
        machine_dirty_log_stop(m);
    }
    base_free(ctx.base);
out:
    if (rc < 0) {
        /* Nothing of a failed save stays behind: the vmstate area is freed. */
        block_vmstate_discard(ctx.targets.vmstate, NULL);
    }
    save_ctx_destroy(&ctx);
    return rc;
}
