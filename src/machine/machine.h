/*
 * The machine object: the one owner of all mutable state of a running VM
 * (KVM fds, vCPUs, guest RAM, devices, the block graph, the monitor, jobs).
 *
 * This header is the interface the monitor and the snapshot code use.
 */
#ifndef SNAPVM_MACHINE_MACHINE_H
#define SNAPVM_MACHINE_MACHINE_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

struct machine;
struct block_graph;
struct monitor;

/* QMP's RunState names: query-status reports run_state_name(). */
enum run_state {
    RUN_STATE_PRELAUNCH,
    RUN_STATE_RUNNING,
    RUN_STATE_PAUSED,
    RUN_STATE_SAVE_VM,
    RUN_STATE_RESTORE_VM,
    RUN_STATE_SHUTDOWN,
};
const char *run_state_name(enum run_state state);

enum run_state machine_run_state(struct machine *m);
bool machine_is_running(struct machine *m); /* vCPUs are executing guest code */

/* QMP stop / cont / system_reset / quit.  They emit STOP, RESUME, RESET, SHUTDOWN. */
int machine_stop(struct machine *m, struct error **errp);
int machine_cont(struct machine *m, struct error **errp);
int machine_system_reset(struct machine *m, struct error **errp);
void machine_request_quit(struct machine *m);

struct block_graph *machine_block_graph(struct machine *m);
struct monitor *machine_monitor(struct machine *m);

#endif
