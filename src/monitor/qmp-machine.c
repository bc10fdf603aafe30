/*
 * QMP and HMP commands over the machine's run state: query-status, stop,
 * cont, system_reset, quit, and HMP "info status".  They only translate:
 * the machine (src/machine) owns the state and emits STOP, RESUME, RESET
 * and SHUTDOWN.
 */
#include <stdio.h>
#include <stdlib.h>

#include "machine/machine.h"
#include "monitor/commands.h"
#include "monitor/monitor-int.h"
#include "monitor/qapi-commands.h"

static struct machine *need_machine(struct qmp_request *req, struct error **errp)
{
    struct machine *m = qmp_request_machine(req);
    if (!m) {
        error_setg(errp, "This monitor has no machine");
    }
    return m;
}

json_t *qmp_query_status(struct qmp_request *req, struct error **errp)
{
    struct machine *m = need_machine(req, errp);
    if (!m) {
        return NULL;
    }
    return json_pack("{s:b, s:b, s:s}", "running", machine_is_running(m), "singlestep", 0, "status",
                     run_state_name(machine_run_state(m)));
}

json_t *qmp_stop(struct qmp_request *req, struct error **errp)
{
    struct machine *m = need_machine(req, errp);
    if (m) {
        machine_stop(m, errp);
    }
    return NULL;
}

json_t *qmp_cont(struct qmp_request *req, struct error **errp)
{
    struct machine *m = need_machine(req, errp);
    if (m) {
        machine_cont(m, errp);
    }
    return NULL;
}

json_t *qmp_system_reset(struct qmp_request *req, struct error **errp)
{
    struct machine *m = need_machine(req, errp);
    if (m) {
        machine_system_reset(m, errp);
    }
    return NULL;
}

/* -name NAME; absent without one, as in QEMU. */
json_t *qmp_query_name(struct qmp_request *req, struct error **errp)
{
    (void)errp;
    const char *name = monitor_vm_name(qmp_request_monitor(req));
    return name ? json_pack("{s:s}", "name", name) : json_object();
}

static void request_quit(void *opaque)
{
    machine_request_quit(opaque);
}

/*
 * As QEMU: the reply goes out first, then SHUTDOWN (the quit is requested
 * once the reply is queued; monitor_free() flushes it before exit).
 */
json_t *qmp_quit(struct qmp_request *req, struct error **errp)
{
    struct machine *m = need_machine(req, errp);
    if (m) {
        qmp_request_after_reply(req, request_quit, m);
    }
    return NULL;
}

static json_t *hmp_info_status(struct qmp_request *req, const char *args, struct error **errp)
{
    (void)args;
    struct machine *m = need_machine(req, errp);
    if (!m) {
        return NULL;
    }
    enum run_state st = machine_run_state(m);
    char *text = NULL;
    int rc;
    if (machine_is_running(m)) {
        rc = asprintf(&text, "VM status: running\r\n");
    } else if (st == RUN_STATE_PAUSED) {
        rc = asprintf(&text, "VM status: paused\r\n");
    } else {
        rc = asprintf(&text, "VM status: paused (%s)\r\n", run_state_name(st));
    }
    if (rc < 0) {
        abort();
    }
    json_t *s = json_string(text);
    free(text);
    return s;
}

const struct hmp_command hmp_machine_commands[] = {
        {"info status", "", "show the current VM status (running|paused)", hmp_info_status},
        {NULL, NULL, NULL, NULL},
};
