/*
 * The QMP schema at run time: loaded from the JSON that qapi-gen.py
 * embedded into the binary, it validates command arguments, return values
 * and event data, and renders itself as QEMU's introspection format
 * (SchemaInfo) for query-qmp-schema.  Internal to src/monitor.
 */
#ifndef SNAPVM_MONITOR_SCHEMA_H
#define SNAPVM_MONITOR_SCHEMA_H

#include <jansson.h>
#include <stdbool.h>

#include "util/error.h"

/* The embedded schema (generated qapi-schema.c). */
extern const char qapi_schema_json[];

struct qapi_schema;

struct qapi_schema *qapi_schema_load(const char *json_text, struct error **errp);
void qapi_schema_free(struct qapi_schema *schema);

bool qapi_schema_has_command(const struct qapi_schema *schema, const char *name);
/* Command names in schema order: a borrowed array of JSON strings. */
json_t *qapi_schema_command_names(const struct qapi_schema *schema);

/*
 * Check a call's arguments (a JSON object, never NULL).  Errors are
 * GenericError worded as QEMU words them: "Parameter 'tag' is missing",
 * "Invalid parameter type for 'tag', expected: string", ...
 */
int qapi_schema_check_args(const struct qapi_schema *schema, const char *command, json_t *args,
                           struct error **errp);
/* Check what a handler returned (a command without "returns" returns {}). */
int qapi_schema_check_return(const struct qapi_schema *schema, const char *command, json_t *ret,
                             struct error **errp);
/* Check an event's data (NULL: no data). Unknown events are errors. */
int qapi_schema_check_event(const struct qapi_schema *schema, const char *event, json_t *data,
                            struct error **errp);

/* The SchemaInfo list for query-qmp-schema (borrowed; built once at load). */
json_t *qapi_schema_introspect(const struct qapi_schema *schema);

#endif
