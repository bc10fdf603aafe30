/*
 * The machine object: the one owner of all mutable state of a running VM
 * (KVM fds, vCPUs, guest RAM, devices, the block graph, the run state).
 *
 * This header is the interface the monitor and the snapshot code use.
 */
#ifndef SNAPVM_MACHINE_MACHINE_H
#define SNAPVM_MACHINE_MACHINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util/buf.h"
#include "util/error.h"

struct machine;
struct block_graph;
struct block_node;
struct device;
struct vm_config;

/* QMP's RunState names: query-status reports run_state_name(). */
enum run_state {
    RUN_STATE_PRELAUNCH,
    RUN_STATE_RUNNING,
    RUN_STATE_PAUSED,
    RUN_STATE_SAVE_VM,
    RUN_STATE_RESTORE_VM,
    RUN_STATE_RESTORE_FAILED, /* half-loaded, stopped; query-status says "restore-vm" */
    RUN_STATE_SHUTDOWN,
};
const char *run_state_name(enum run_state state);
/* The transition table (machine.c); exposed for tests. */
bool run_state_transition_allowed(enum run_state from, enum run_state to);

enum run_state machine_run_state(struct machine *m);
bool machine_is_running(struct machine *m); /* vCPUs are executing guest code */

/*
 * QMP stop / cont / system_reset / quit.  They emit STOP, RESUME, RESET,
 * SHUTDOWN.  During a snapshot's pause (save-vm, restore-vm) stop and cont
 * are honoured when the operation ends: the VM then ends stopped or
 * running as last asked.  cont is refused on a half-loaded VM (a load
 * that failed after changing something), system_reset during a snapshot.
 */
int machine_stop(struct machine *m, struct error **errp);
int machine_cont(struct machine *m, struct error **errp);
int machine_system_reset(struct machine *m, struct error **errp);
void machine_request_quit(struct machine *m);

struct block_graph *machine_block_graph(struct machine *m);

/*
 * Events (STOP, RESUME, RESET, SHUTDOWN) leave the machine through one
 * handler that its owner (main.c: the QMP monitor) gives it; the machine
 * and the layers below never know who listens.  The handler may run on any
 * thread, with the machine's lock held (so events leave in the order of the
 * state changes they report): it must only queue the event, never call back
 * into the machine.  `data` is stolen (may be NULL).  Without a handler
 * events are dropped.
 */
typedef void (*machine_event_fn)(void *opaque, const char *event, json_t *data);
void machine_set_event_handler(struct machine *m, machine_event_fn fn, void *opaque);
void machine_emit_event(struct machine *m, const char *event, json_t *data);

/* ---- lifecycle (main.c) ---- */

/* Build the VM from a parsed command line: KVM, RAM, vCPUs, devices, guest. */
struct machine *machine_new(const struct vm_config *cfg, struct error **errp);
/* Start the vCPU threads: running, or paused in "prelaunch" with -S. */
int machine_start(struct machine *m, struct error **errp);
/*
 * Run until quit (machine_request_quit, SIGINT/SIGTERM, a fatal vCPU error).
 * The calling thread must have SIGINT and SIGTERM blocked (main() does
 * that before creating any thread).  Returns the process exit status.
 */
int machine_run(struct machine *m);
/* Stop the vCPUs, flush and close disks, free everything. */
void machine_free(struct machine *m);

/* ---- for snapshots (src/snapshot) ---- */

/*
 * Internal pause of all vCPUs, without events or run-state change.  Nests: a
 * count of pauses is kept, and vCPUs run again only when every
 * machine_pause_vcpus() has been matched by machine_resume_vcpus().  When
 * it returns 0, every vCPU is outside KVM_RUN with its last exit completed,
 * so vCPU, VM and device state can be read or written consistently.  Must not
 * be called from a vCPU thread.
 */
int machine_pause_vcpus(struct machine *m, struct error **errp);
void machine_resume_vcpus(struct machine *m);
/*
 * One snapshot operation at a time: claim the machine's snapshot slot before
 * starting one (fails with a clear error if another is under way), release
 * it when done.  QMP, the jobs, HMP and -loadvm all take it.
 */
int machine_snapshot_claim(struct machine *m, struct error **errp);
void machine_snapshot_release(struct machine *m);

/*
 * A snapshot operation's pause: the vCPUs stop (STOP if the guest was
 * running) and the run state becomes `during` (RUN_STATE_SAVE_VM or
 * RUN_STATE_RESTORE_VM).  Refused for a save on a half-loaded VM.  After
 * quit the state stays "shutdown" (quit waits for the operation).  machine_snapshot_resume() ends
 * it in the state the user asked for (the one before, or a stop/cont sent during the operation),
 * with RESUME if the guest runs again.  `half_loaded` non-NULL (what failed): a load failed after
 * it changed something; the VM stays stopped in RUN_STATE_RESTORE_FAILED, with a STOP event.
 */
int machine_snapshot_pause(struct machine *m, enum run_state during, struct error **errp);
void machine_snapshot_resume(struct machine *m, const char *half_loaded);

int machine_vcpu_count(struct machine *m);
/* Guest RAM as one host buffer: page i of the vmstate RAM section is ram + i*4096. */
void *machine_ram(struct machine *m, uint64_t *size);
/*
 * Instant restore maps a snapshot's RAM clusters MAP_PRIVATE over guest RAM;
 * that is only possible where RAM is private memory (not -mem-path, whose
 * RAM is the file).  What is mapped from where is the snapshot layer's
 * record (src/snapshot/restore.c).
 */
bool machine_ram_is_private(struct machine *m);
/* The -mem-path file guest RAM is (mapped at offset 0), or -1. */
int machine_ram_file(struct machine *m);

/* The guest-visible virtual clock: advances only while vCPUs run. */
uint64_t machine_vm_clock_ns(struct machine *m);

/*
 * Dirty-page tracking for a live save.  Bit i of a bitmap is page i (4 KiB)
 * of machine_ram(); a bitmap has machine_dirty_bitmap_words() words.  sync
 * ORs into `bitmap` every page written since start or the previous sync,
 * by the guest's CPUs (KVM's dirty log) or by snapvm's device models, and
 * clears them.  For a final, consistent pass: pause the vCPUs, sync, write
 * the pages, save the device and vCPU state, then resume and stop.  stop
 * pauses the vCPUs briefly itself (not from a vCPU thread).
 */
size_t machine_dirty_bitmap_words(struct machine *m);
int machine_dirty_log_start(struct machine *m, struct error **errp);
int machine_dirty_log_sync(struct machine *m, uint64_t *bitmap, struct error **errp);
void machine_dirty_log_stop(struct machine *m);

/*
 * State capture, all with the vCPUs paused (machine_pause_vcpus).  A record
 * is snapvm's own format (tagged sections with lengths); loading checks every
 * section and length and names what does not match.
 *
 * To restore a whole VM, load in this order: vm_state_load() (irqchip, PIT,
 * clocks), then every device_load(), then every vcpu_state_load().  The
 * devices re-assert their interrupt lines against the restored irqchip, and
 * the vCPUs' pending events are applied last, against restored LAPICs.
 */
int vcpu_state_save(struct machine *m, int index, struct byte_buf *out, struct error **errp);
/*
 * The checks of a load without its side effects (every section present
 * once, with this host's size): a whole-VM load runs them on every record
 * before it changes anything.
 */
int vcpu_state_check(struct machine *m, int index, const void *data, size_t len,
                     struct error **errp);
int vm_state_check(struct machine *m, const void *data, size_t len, struct error **errp);
int vcpu_state_load(struct machine *m, int index, const void *data, size_t len,
                    struct error **errp);
int vm_state_save(struct machine *m, struct byte_buf *out, struct error **errp);
int vm_state_load(struct machine *m, const void *data, size_t len, struct error **errp);

/* Devices in creation order (pass NULL for the first); see hw/device.h. */
struct device *machine_next_device(struct machine *m, struct device *prev);
struct device *machine_find_device(struct machine *m, const char *id);

#endif
