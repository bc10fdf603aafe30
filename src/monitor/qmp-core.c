/*
 * Protocol-level commands: capabilities negotiation, version, and the two
 * introspection commands (query-commands, query-qmp-schema), all answered
 * from the schema and the registry so that they cannot drift from what the
 * dispatcher actually serves.
 */
#include <string.h>

#include "monitor/monitor-int.h"
#include "monitor/qapi-commands.h"

/* The dispatcher switches the client to command mode when this succeeds. */
json_t *qmp_qmp_capabilities(struct qmp_request *req, const struct qapi_args_qmp_capabilities *args,
                             struct error **errp)
{
    (void)req;
    size_t i;
    json_t *cap;
    json_array_foreach(args->enable, i, cap)
    {
        /* The schema knows "oob"; this server does not offer it. */
        error_setg(errp, "Capability '%s' is not available", json_string_value(cap));
        return NULL;
    }
    return NULL;
}

json_t *qmp_query_version(struct qmp_request *req, struct error **errp)
{
    (void)req, (void)errp;
    return monitor_version_info();
}

json_t *qmp_query_commands(struct qmp_request *req, struct error **errp)
{
    (void)errp;
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

json_t *qmp_query_qmp_schema(struct qmp_request *req, struct error **errp)
{
    (void)errp;
    return json_incref(qapi_schema_introspect(monitor_schema(qmp_request_monitor(req))));
}
