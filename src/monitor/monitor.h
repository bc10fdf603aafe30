/*
 * The QMP monitor: sockets, protocol, dispatch, events.  It runs on its own
 * thread and never waits for guest or snapshot I/O.
 */
#ifndef SNAPVM_MONITOR_MONITOR_H
#define SNAPVM_MONITOR_MONITOR_H

#include <jansson.h>

#include "util/error.h"

struct machine;
struct monitor;
struct job_manager;

struct monitor *monitor_new(struct machine *machine, struct error **errp);
/* "unix:PATH,server=on,wait=off" or "tcp:HOST:PORT,server=on,wait=off" (as -qmp). */
int monitor_listen(struct monitor *mon, const char *spec, struct error **errp);
/* Start the monitor thread. */
int monitor_start(struct monitor *mon, struct error **errp);
/*
 * Broadcast an event to every negotiated client, from any thread.  `data` is
 * stolen (may be NULL).  `mon` may be NULL (no -qmp): the event is dropped.
 */
void monitor_emit_event(struct monitor *mon, const char *event, json_t *data);
/*
 * Shut the monitor down: stop its thread (no command runs after this),
 * cancel jobs and wait for them, wait for deferred commands to answer,
 * flush what is queued for clients (briefly), close every socket.  Events
 * emitted afterwards are accepted and dropped, so other threads (vCPUs)
 * may still emit until the machine is gone: stop, free the machine, then
 * free the monitor.
 */
void monitor_stop(struct monitor *mon);
/* monitor_stop() if not done yet, then free everything. */
void monitor_free(struct monitor *mon);

/* -name NAME, for query-name (copied; NULL: none). */
void monitor_set_vm_name(struct monitor *mon, const char *name);

/* The background jobs (snapshot-save, ...) of this monitor's machine. */
struct job_manager *monitor_jobs(struct monitor *mon);

#endif
