/*
 * The registry of QMP and HMP commands: which tables the monitor serves.
 *
 * How to add a QMP command:
 *   1. Describe it in the schema (qapi-schema.json, or a qapi-<area>.json
 *      listed in src/monitor/meson.build): its arguments, its return type,
 *      and any type they use.  qapi-gen.py checks it at build time and
 *      generates `struct qapi_args_foo` (one typed member per argument) and
 *      the prototype of its handler into qapi-commands.h, and its entry in
 *      the command table.  The dispatcher validates every call against the
 *      schema before the handler runs; query-qmp-schema shows it.
 *   2. Write the handler in the file of its area (qmp-machine.c,
 *      qmp-block.c, qmp-jobs.c, qmp-snapshot.c, ...), with the generated
 *      prototype:
 *          json_t *qmp_foo(struct qmp_request *req,
 *                          const struct qapi_args_foo *args, struct error **errp)
 *      (no `args` for a command without arguments).  Return the "return"
 *      value (NULL means {}) or set *errp.  Slow work: qmp_request_defer(req),
 *      hand req to a thread or job, return NULL; later
 *      qmp_request_complete(req, ret, err).  Never block the monitor thread.
 *   A command without a handler does not link; a handler that names an
 *   argument the schema lacks does not compile.
 *
 * How to add an HMP command (for human-monitor-command):
 *   add {"name", "params", "help", handler} to an HMP table (hmp.c's, or
 *   the area's own, declared in commands.h and listed below).  Names may
 *   be two words ("info snapshots").  The handler gets the rest of the
 *   command line and returns the output text as a JSON string.
 */
#include <string.h>

#include "monitor/commands.h"
#include "monitor/monitor-int.h"
#include "monitor/qapi-commands.h"

const struct qmp_command *const qmp_default_tables[] = {
        qapi_commands,
        NULL,
};

const struct hmp_command *const hmp_default_tables[] = {
        hmp_core_commands,
        hmp_machine_commands,
        hmp_snapshot_commands,
        NULL,
};

const struct qmp_command *qmp_find_command(const struct qmp_command *const *tables,
                                           const char *name)
{
    for (size_t t = 0; tables[t]; t++) {
        for (const struct qmp_command *c = tables[t]; c->name; c++) {
            if (!strcmp(c->name, name)) {
                return c;
            }
        }
    }
    return NULL;
}
