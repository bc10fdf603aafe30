/*
 * Shared between the files of src/monitor (not for other components): the
 * request object, the dispatcher entry point, and the monitor accessors the
 * handlers and the dispatcher use.  Unit tests include it to build a monitor
 * with their own schema and commands.
 */
#ifndef SNAPVM_MONITOR_MONITOR_INT_H
#define SNAPVM_MONITOR_MONITOR_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "monitor/monitor.h"
#include "monitor/qmp.h"
#include "monitor/schema.h"

struct qmp_request {
    struct monitor *mon;
    uint64_t client_id; /* 0: not from a client (tests) */
    json_t *id;         /* the client's "id", echoed verbatim; may be NULL */
    char *command;
    bool hmp;      /* human-monitor-command: errors become output text */
    bool deferred; /* the handler called qmp_request_defer() */
    /* Filled by qmp_request_complete(), consumed on the monitor thread. */
    json_t *ret;
    struct error *err;
    struct qmp_request *next;
};

/* NULL-terminated lists of NULL-name-terminated tables (commands.c). */
extern const struct qmp_command *const qmp_default_tables[];
extern const struct hmp_command *const hmp_default_tables[];

/*
 * A monitor with its own schema and command tables (unit tests).
 * monitor_new() is this with the embedded schema and the default tables.
 */
struct monitor *monitor_new_custom(struct machine *machine, const char *schema_json,
                                   const struct qmp_command *const *qmp_tables,
                                   const struct hmp_command *const *hmp_tables,
                                   struct error **errp);

const struct qapi_schema *monitor_schema(struct monitor *mon);
const struct qmp_command *const *monitor_qmp_tables(struct monitor *mon);
const struct hmp_command *const *monitor_hmp_tables(struct monitor *mon);
struct machine *monitor_machine(struct monitor *mon);
const char *monitor_vm_name(struct monitor *mon); /* NULL: no -name */
/*
 * Count a request as deferred (monitor_free waits for it), and hand a
 * completed one to the monitor thread.
 */
void monitor_note_deferred(struct monitor *mon);
/* qmp_request_after_reply(): one pending call, run by the monitor thread. */
void monitor_set_after_reply(struct monitor *mon, void (*fn)(void *opaque), void *opaque);
void monitor_queue_completion(struct monitor *mon, struct qmp_request *req);

/* query-version's answer, also in the greeting. */
json_t *monitor_version_info(void);

/*
 * Create a listening socket from a -qmp spec (sockets.c): non-blocking,
 * close-on-exec.  For unix sockets *unix_path gets the path to remove at
 * exit (malloc'd).
 */
int qmp_socket_listen(const char *spec, char **unix_path, struct error **errp);

/* Look a command up in a list of tables; NULL if absent. */
const struct qmp_command *qmp_find_command(const struct qmp_command *const *tables,
                                           const char *name);

/*
 * Handle one framed message from a client (dispatch.c).  Returns the reply
 * to send, or NULL when the handler deferred it: the client then waits for
 * the completion.  *negotiated is the client's capabilities state.
 */
json_t *qmp_dispatch(struct monitor *mon, uint64_t client_id, bool *negotiated, const char *frame,
                     size_t len);
/* An error reply (no "id": the message could not be read). */
json_t *qmp_error_reply(json_t *id, struct error *err);
/* The reply for a request's outcome (ret, err stolen); frees nothing else. */
json_t *qmp_request_reply(struct qmp_request *req, json_t *ret, struct error *err);
void qmp_request_free(struct qmp_request *req);

#endif
