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
 * Stop the monitor thread, cancel and wait for jobs, flush what is still
 * queued for clients (briefly), close every socket and free everything.
 */
void monitor_free(struct monitor *mon);

/* The background jobs (snapshot-save, ...) of this monitor's machine. */
struct job_manager *monitor_jobs(struct monitor *mon);

#endif
