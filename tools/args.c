/*
 * Arguments typed by the server's own schema (query-qmp-schema, QEMU's
 * SchemaInfo format): `tag=123` stays a string where the command wants a
 * string, `flat=on` becomes true where it wants a boolean, numbers become
 * numbers, arrays are JSON or a comma list (a,b,c), objects are JSON.  A
 * single JSON object word is taken as the arguments whole.  The same schema
 * gives the shell its completions (command, argument and enum names).
 */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

json_t *ctl_schema(struct ctl *ctl)
{
    if (!ctl->schema) {
        int rc;
        json_t *s = ctl_call(ctl, "query-qmp-schema", NULL, &rc);
        ctl->schema = s ? s : json_array(); /* an old server: untyped values */
    }
    return ctl->schema;
}

static json_t *find_info(json_t *schema, const char *name)
{
    size_t i;
    json_t *info;
    if (!name) {
        return NULL;
    }
    json_array_foreach(schema, i, info)
    {
        const char *n = json_string_value(json_object_get(info, "name"));
        if (n && !strcmp(n, name)) {
            return info;
        }
    }
    return NULL;
}

static json_t *arg_members(json_t *schema, const char *cmd)
{
    json_t *c = find_info(schema, cmd);
    json_t *args = c ? find_info(schema, json_string_value(json_object_get(c, "arg-type"))) : NULL;
    return json_object_get(args, "members");
}

/* The SchemaInfo of argument `key` of `cmd`, or NULL. */
static json_t *arg_type(json_t *schema, const char *cmd, const char *key)
{
    size_t i;
    json_t *m;
    json_array_foreach(arg_members(schema, cmd), i, m)
    {
        if (!strcmp(json_str(m, "name"), key)) {
            return find_info(schema, json_string_value(json_object_get(m, "type")));
        }
    }
    return NULL;
}

/* "string", "int", "number", "boolean", "array", "object" or "value". */
static const char *json_type_of(json_t *type)
{
    const char *meta = json_string_value(json_object_get(type, "meta-type"));
    if (!meta) {
        return "value";
    }
    if (!strcmp(meta, "builtin")) {
        return json_string_value(json_object_get(type, "json-type"));
    }
    if (!strcmp(meta, "enum")) {
        return "string";
    }
    return meta;
}

static json_t *parse_bool(const char *v)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes")) {
        return json_true();
    }
    if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no")) {
        return json_false();
    }
    return json_string(v); /* the server names the error */
}

static json_t *split_list(const char *v)
{
    json_t *list = json_array();
    char *copy = strdup(v), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        json_array_append_new(list, json_string(tok));
    }
    free(copy);
    return list;
}

static json_t *typed_value(json_t *schema, const char *cmd, const char *key, const char *v)
{
    const char *jt = json_type_of(arg_type(schema, cmd, key));
    if (!strcmp(jt, "string")) {
        return json_string(v);
    }
    if (!strcmp(jt, "boolean")) {
        return parse_bool(v);
    }
    json_t *parsed = json_loads(v, JSON_DECODE_ANY, NULL);
    if (parsed) {
        return parsed;
    }
    if (!strcmp(jt, "array")) {
        return split_list(v);
    }
    return json_string(v);
}

json_t *args_build(json_t *schema, const char *cmd, int argc, char **argv, char **err)
{
    *err = NULL;
    if (argc == 0) {
        return NULL;
    }
    if (argc == 1 && argv[0][0] == '{') {
        json_error_t jerr;
        json_t *obj = json_loads(argv[0], 0, &jerr);
        if (!json_is_object(obj)) {
            json_decref(obj);
            if (asprintf(err, "the arguments are not a JSON object: %s", jerr.text) < 0) {
                abort();
            }
            return NULL;
        }
        return obj;
    }
    json_t *args = json_object();
    for (int i = 0; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq || eq == argv[i]) {
            if (asprintf(err, "expected key=value, got '%s'", argv[i]) < 0) {
                abort();
            }
            json_decref(args);
            return NULL;
        }
        char *key = strndup(argv[i], (size_t)(eq - argv[i]));
        json_object_set_new(args, key, typed_value(schema, cmd, key, eq + 1));
        free(key);
    }
    return args;
}

json_t *schema_command_names(json_t *schema)
{
    json_t *names = json_array();
    size_t i;
    json_t *info;
    json_array_foreach(schema, i, info)
    {
        const char *meta = json_string_value(json_object_get(info, "meta-type"));
        if (meta && !strcmp(meta, "command")) {
            json_array_append(names, json_object_get(info, "name"));
        }
    }
    return names;
}

json_t *schema_arg_names(json_t *schema, const char *cmd)
{
    json_t *names = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(arg_members(schema, cmd), i, m)
    {
        json_array_append(names, json_object_get(m, "name"));
    }
    return names;
}

json_t *schema_arg_values(json_t *schema, const char *cmd, const char *key)
{
    json_t *type = arg_type(schema, cmd, key);
    json_t *values = json_array();
    const char *meta = json_string_value(json_object_get(type, "meta-type"));
    if (meta && !strcmp(meta, "enum")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(type, "values"), i, v)
        {
            json_array_append(values, v);
        }
    } else if (meta && !strcmp(meta, "builtin") &&
               !strcmp(json_str(type, "json-type"), "boolean")) {
        json_array_append_new(values, json_string("on"));
        json_array_append_new(values, json_string("off"));
    }
    return values;
}

bool schema_returns_member(json_t *schema, const char *cmd, const char *name)
{
    json_t *c = find_info(schema, cmd);
    json_t *ret = c ? find_info(schema, json_string_value(json_object_get(c, "ret-type"))) : NULL;
    const char *meta = json_string_value(json_object_get(ret, "meta-type"));
    if (meta && !strcmp(meta, "array")) {
        ret = find_info(schema, json_string_value(json_object_get(ret, "element-type")));
    }
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(ret, "members"), i, m)
    {
        if (!strcmp(json_str(m, "name"), name)) {
            return true;
        }
    }
    return false;
}
