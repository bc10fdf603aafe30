/*
 * The registry of QMP and HMP commands: which tables the monitor serves.
 *
 * How to add a QMP command:
 *   1. Describe it in the schema (qapi-schema.json, or a qapi-<area>.json
 *      listed in src/monitor/meson.build): its arguments, its return type,
 *      and any struct/enum they use.  The dispatcher checks every call
 *      against this before the handler runs, and query-qmp-schema shows it.
 *   2. Write the handler in the file of its area (qmp-machine.c,
 *      qmp-block.c, qmp-jobs.c, qmp-snapshot.c, ...):
 *          static json_t *qmp_foo(struct qmp_request *req, json_t *args,
 *                                 struct error **errp)
 *      `args` is already valid; return the "return" value (NULL means {})
 *      or set *errp.  Slow work: qmp_request_defer(req), hand req to a
 *      thread or job, return NULL; later qmp_request_complete(req, ret, err).
 *      Never block the monitor thread.
 *   3. Add {"foo", qmp_foo} to the area's table (ends with {NULL, NULL}).
 *      A new area: declare its table in commands.h, list it below, and add
 *      the file to src/monitor/meson.build.
 *   tests/unit/monitor/test_registry.c fails if a handler lacks a schema
 *   entry or a schema command lacks a handler.
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

const struct qmp_command *const qmp_default_tables[] = {
        qmp_core_commands,
        qmp_machine_commands,
        qmp_block_commands,
        qmp_job_commands,
        qmp_snapshot_commands,
        qmp_hmp_commands,
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
