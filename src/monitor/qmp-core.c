/*
 * Protocol-level commands: capabilities negotiation, version, and the two
 * introspection commands (query-commands, query-qmp-schema), all answered
 * from the schema and the registry so that they cannot drift from what the
 * dispatcher actually serves.
 */
#include <string.h>

#include "monitor/commands.h"
#include "monitor/monitor-int.h"

/* The dispatcher switches the client to command mode when this succeeds. */
static json_t *qmp_capabilities(struct qmp_request *req, json_t *args, struct error **errp)
{
    (void)req;
    size_t i;
    json_t *cap;
    json_array_foreach(json_object_get(args, "enable"), i, cap)
    {
        /* The schema knows "oob"; this server does not offer it. */
        error_setg(errp, "Capability '%s' is not available", json_string_value(cap));
        return NULL;
    }
    return NULL;
}

static json_t *qmp_query_version(struct qmp_request *req, json_t *args, struct error **errp)
{
    (void)req, (void)args, (void)errp;
    return monitor_version_info();
}

static json_t *qmp_query_commands(struct qmp_request *req, json_t *args, struct error **errp)
{
    (void)args, (void)errp;
    struct monitor *mon = qmp_request_monitor(req);
    json_t *list = json_array();
    size_t i;
    json_t *name;
    json_array_foreach(qapi_schema_command_names(monitor_schema(mon)), i, name)
    {
        if (qmp_find_command(monitor_qmp_tables(mon), json_string_value(name))) {
            json_array_append_new(list, json_pack("{s:O}", "name", name));
        }
    }
    return list;
}

static json_t *qmp_query_qmp_schema(struct qmp_request *req, json_t *args, struct error **errp)
{
    (void)args, (void)errp;
    return json_incref(qapi_schema_introspect(monitor_schema(qmp_request_monitor(req))));
}

const struct qmp_command qmp_core_commands[] = {
        {"qmp_capabilities", qmp_capabilities},
        {"query-version", qmp_query_version},
        {"query-commands", qmp_query_commands},
        {"query-qmp-schema", qmp_query_qmp_schema},
        {NULL, NULL},
};
