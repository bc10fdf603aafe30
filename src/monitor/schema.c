/*
 * The QMP schema at run time (see schema.h): lookup tables over the embedded
 * definitions, the argument/return/event validator, and the rendering as
 * QEMU's SchemaInfo introspection list.
 *
 * Type expressions are what the schema file writes: a JSON string naming a
 * built-in, struct or enum, or a one-element JSON array for "array of".
 * gen-schema.py has already rejected dangling names at build time; the
 * loader re-checks the shape so that a schema passed in by a unit test is
 * held to the same rules.
 */
#include "monitor/schema.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qapi_schema {
    json_t *types;         /* struct/enum name -> definition */
    json_t *commands;      /* command name -> definition */
    json_t *events;        /* event name -> definition */
    json_t *command_names; /* array of strings, schema order */
    json_t *introspection; /* SchemaInfo array */
};

/* ---- built-in types ---- */

enum builtin_kind { B_STR, B_INT, B_NUMBER, B_BOOL, B_NULL, B_ANY };

struct builtin {
    const char *name;
    enum builtin_kind kind;
    int64_t min, max;       /* B_INT only */
    const char *intro_name; /* the name introspection shows (all ints are "int") */
    const char *json_type;  /* SchemaInfoBuiltin json-type */
};

static const struct builtin builtins[] = {
        {"str", B_STR, 0, 0, "str", "string"},
        {"int", B_INT, INT64_MIN, INT64_MAX, "int", "int"},
        {"int8", B_INT, INT8_MIN, INT8_MAX, "int", "int"},
        {"int16", B_INT, INT16_MIN, INT16_MAX, "int", "int"},
        {"int32", B_INT, INT32_MIN, INT32_MAX, "int", "int"},
        {"int64", B_INT, INT64_MIN, INT64_MAX, "int", "int"},
        {"uint8", B_INT, 0, UINT8_MAX, "int", "int"},
        {"uint16", B_INT, 0, UINT16_MAX, "int", "int"},
        {"uint32", B_INT, 0, UINT32_MAX, "int", "int"},
        /* JSON integers beyond INT64_MAX are not representable in jansson. */
        {"uint64", B_INT, 0, INT64_MAX, "int", "int"},
        {"size", B_INT, 0, INT64_MAX, "int", "int"},
        {"number", B_NUMBER, 0, 0, "number", "number"},
        {"bool", B_BOOL, 0, 0, "bool", "boolean"},
        {"null", B_NULL, 0, 0, "null", "null"},
        {"any", B_ANY, 0, 0, "any", "value"},
};

static const struct builtin *find_builtin(const char *name)
{
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        if (!strcmp(builtins[i].name, name)) {
            return &builtins[i];
        }
    }
    return NULL;
}

static const char *def_kind(json_t *def)
{
    static const char *const kinds[] = {"command", "event", "struct", "enum"};
    for (size_t i = 0; i < 4; i++) {
        if (json_is_string(json_object_get(def, kinds[i]))) {
            return kinds[i];
        }
    }
    return NULL;
}

/* Member name without the '*' that marks it optional. */
static const char *member_name(const char *key, bool *optional)
{
    *optional = key[0] == '*';
    return *optional ? key + 1 : key;
}

/* ---- loading ---- */

static int check_type_expr(const struct qapi_schema *s, json_t *t, const char *where,
                           struct error **errp)
{
    if (json_is_array(t) && json_array_size(t) == 1) {
        return check_type_expr(s, json_array_get(t, 0), where, errp);
    }
    const char *name = json_string_value(t);
    if (!name || (!find_builtin(name) && !json_object_get(s->types, name))) {
        error_setg(errp, "schema: %s names an unknown type", where);
        return -1;
    }
    return 0;
}

static int check_def(const struct qapi_schema *s, json_t *def, struct error **errp)
{
    const char *kind = def_kind(def);
    const char *name = json_string_value(json_object_get(def, kind));
    json_t *data = json_object_get(def, "data");
    if (!strcmp(kind, "enum")) {
        if (!json_is_array(data)) {
            error_setg(errp, "schema: enum '%s' needs a data array", name);
            return -1;
        }
        return 0;
    }
    if (data && !json_is_object(data)) {
        error_setg(errp, "schema: %s '%s': data must be an object", kind, name);
        return -1;
    }
    const char *key;
    json_t *t;
    json_object_foreach(data, key, t)
    {
        if (check_type_expr(s, t, name, errp) < 0) {
            return -1;
        }
    }
    json_t *ret = json_object_get(def, "returns");
    return ret ? check_type_expr(s, ret, name, errp) : 0;
}

static int index_def(struct qapi_schema *s, json_t *def, struct error **errp)
{
    const char *kind = def_kind(def);
    if (!kind) {
        error_setg(errp, "schema: a definition lacks command/event/struct/enum");
        return -1;
    }
    const char *name = json_string_value(json_object_get(def, kind));
    json_t *table = !strcmp(kind, "command") ? s->commands
                    : !strcmp(kind, "event") ? s->events
                                             : s->types;
    if (json_object_get(table, name)) {
        error_setg(errp, "schema: '%s' is defined twice", name);
        return -1;
    }
    json_object_set(table, name, def);
    if (!strcmp(kind, "command")) {
        json_array_append_new(s->command_names, json_string(name));
    }
    return 0;
}

static json_t *build_introspection(const struct qapi_schema *s);

struct qapi_schema *qapi_schema_load(const char *json_text, struct error **errp)
{
    json_error_t jerr;
    json_t *defs = json_loads(json_text, 0, &jerr);
    if (!json_is_array(defs)) {
        error_setg(errp, "schema: not a JSON array (%s)", defs ? "wrong type" : jerr.text);
        json_decref(defs);
        return NULL;
    }
    struct qapi_schema *s = calloc(1, sizeof(*s));
    s->types = json_object();
    s->commands = json_object();
    s->events = json_object();
    s->command_names = json_array();
    size_t i;
    json_t *def;
    int ret = 0;
    json_array_foreach(defs, i, def)
    {
        ret = ret ? ret : index_def(s, def, errp);
    }
    json_array_foreach(defs, i, def)
    {
        ret = ret ? ret : check_def(s, def, errp);
    }
    json_decref(defs);
    if (ret < 0) {
        qapi_schema_free(s);
        return NULL;
    }
    s->introspection = build_introspection(s);
    return s;
}

void qapi_schema_free(struct qapi_schema *s)
{
    if (!s) {
        return;
    }
    json_decref(s->types);
    json_decref(s->commands);
    json_decref(s->events);
    json_decref(s->command_names);
    json_decref(s->introspection);
    free(s);
}

bool qapi_schema_has_command(const struct qapi_schema *s, const char *name)
{
    return json_object_get(s->commands, name) != NULL;
}

json_t *qapi_schema_command_names(const struct qapi_schema *s)
{
    return s->command_names;
}

json_t *qapi_schema_introspect(const struct qapi_schema *s)
{
    return s->introspection;
}

/* ---- validation ---- */

static int check_value(const struct qapi_schema *s, json_t *type, json_t *v, const char *path,
                       struct error **errp);

static void type_error(const char *path, const char *expected, struct error **errp)
{
    error_setg(errp, "Invalid parameter type for '%s', expected: %s", path, expected);
}

static int check_builtin(const struct builtin *b, json_t *v, const char *path, struct error **errp)
{
    switch (b->kind) {
    case B_ANY:
        return 0;
    case B_STR:
        return json_is_string(v) ? 0 : (type_error(path, "string", errp), -1);
    case B_BOOL:
        return json_is_boolean(v) ? 0 : (type_error(path, "boolean", errp), -1);
    case B_NULL:
        return json_is_null(v) ? 0 : (type_error(path, "null", errp), -1);
    case B_NUMBER:
        return json_is_number(v) ? 0 : (type_error(path, "number", errp), -1);
    case B_INT:
        break;
    }
    if (!json_is_integer(v)) {
        type_error(path, "integer", errp);
        return -1;
    }
    json_int_t n = json_integer_value(v);
    if (n < b->min || n > b->max) {
        error_setg(errp, "Parameter '%s' expects %s", path, b->name);
        return -1;
    }
    return 0;
}

static char *join_path(const char *prefix, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s%s%s", prefix ? prefix : "", prefix ? "." : "", name) < 0) {
        abort();
    }
    return p;
}

/* Declared members first (missing, ill-typed), then the unexpected ones. */
static int check_members(const struct qapi_schema *s, json_t *data, json_t *obj, const char *prefix,
                         struct error **errp)
{
    const char *key;
    json_t *t;
    json_object_foreach(data, key, t)
    {
        bool optional;
        const char *name = member_name(key, &optional);
        json_t *v = json_object_get(obj, name);
        char *path = join_path(prefix, name);
        int ret = 0;
        if (!v && !optional) {
            error_setg(errp, "Parameter '%s' is missing", path);
            ret = -1;
        } else if (v) {
            ret = check_value(s, t, v, path, errp);
        }
        free(path);
        if (ret < 0) {
            return -1;
        }
    }
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        char *starred = NULL;
        if (asprintf(&starred, "*%s", key) < 0) {
            abort();
        }
        bool known = json_object_get(data, key) || json_object_get(data, starred);
        free(starred);
        if (!known) {
            char *path = join_path(prefix, key);
            error_setg(errp, "Parameter '%s' is unexpected", path);
            free(path);
            return -1;
        }
    }
    return 0;
}

static int check_enum(json_t *def, json_t *v, const char *path, struct error **errp)
{
    if (!json_is_string(v)) {
        type_error(path, "string", errp);
        return -1;
    }
    size_t i;
    json_t *value;
    json_array_foreach(json_object_get(def, "data"), i, value)
    {
        if (json_equal(value, v)) {
            return 0;
        }
    }
    error_setg(errp, "Parameter '%s' does not accept value '%s'", path, json_string_value(v));
    return -1;
}

static int check_array(const struct qapi_schema *s, json_t *elem_type, json_t *v, const char *path,
                       struct error **errp)
{
    if (!json_is_array(v)) {
        type_error(path, "array", errp);
        return -1;
    }
    size_t i;
    json_t *elem;
    json_array_foreach(v, i, elem)
    {
        char *p = NULL;
        if (asprintf(&p, "%s[%zu]", path, i) < 0) {
            abort();
        }
        int ret = check_value(s, elem_type, elem, p, errp);
        free(p);
        if (ret < 0) {
            return -1;
        }
    }
    return 0;
}

static int check_value(const struct qapi_schema *s, json_t *type, json_t *v, const char *path,
                       struct error **errp)
{
    if (json_is_array(type)) {
        return check_array(s, json_array_get(type, 0), v, path, errp);
    }
    const char *name = json_string_value(type);
    const struct builtin *b = find_builtin(name);
    if (b) {
        return check_builtin(b, v, path, errp);
    }
    json_t *def = json_object_get(s->types, name);
    if (!strcmp(def_kind(def), "enum")) {
        return check_enum(def, v, path, errp);
    }
    if (!json_is_object(v)) {
        type_error(path, "object", errp);
        return -1;
    }
    return check_members(s, json_object_get(def, "data"), v, path, errp);
}

int qapi_schema_check_args(const struct qapi_schema *s, const char *command, json_t *args,
                           struct error **errp)
{
    json_t *def = json_object_get(s->commands, command);
    if (!def) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND, "The command %s has not been found",
                  command);
        return -1;
    }
    json_t *data = json_object_get(def, "data");
    json_t *empty = json_object();
    int ret = check_members(s, data ? data : empty, args, NULL, errp);
    json_decref(empty);
    return ret;
}

int qapi_schema_check_return(const struct qapi_schema *s, const char *command, json_t *ret,
                             struct error **errp)
{
    json_t *def = json_object_get(s->commands, command);
    json_t *type = def ? json_object_get(def, "returns") : NULL;
    struct error *err = NULL;
    if (!def) {
        error_setg(&err, "no such command");
    } else if (!type && !(json_is_object(ret) && json_object_size(ret) == 0)) {
        error_setg(&err, "expected an empty object");
    } else if (type) {
        check_value(s, type, ret, "return", &err);
    }
    if (err) {
        error_setg(errp, "Internal error: the reply of '%s' does not match the schema: %s", command,
                   err->message);
        error_free(err);
        return -1;
    }
    return 0;
}

int qapi_schema_check_event(const struct qapi_schema *s, const char *event, json_t *data,
                            struct error **errp)
{
    json_t *def = json_object_get(s->events, event);
    if (!def) {
        error_setg(errp, "event %s is not in the schema", event);
        return -1;
    }
    json_t *members = json_object_get(def, "data");
    json_t *empty = json_object();
    struct error *err = NULL;
    check_members(s, members ? members : empty, data ? data : empty, NULL, &err);
    json_decref(empty);
    if (err) {
        error_setg(errp, "event %s: %s", event, err->message);
        error_free(err);
        return -1;
    }
    return 0;
}

/* ---- introspection (QEMU's SchemaInfo) ---- */

/*
 * Like QEMU, type names other than built-ins are replaced by numbers: the
 * names are not part of the interface, so clients must not depend on them.
 * "0" is the empty object, the arg-type of commands without arguments.
 */
struct intro {
    const struct qapi_schema *s;
    json_t *out;   /* SchemaInfo array */
    json_t *names; /* type expression (as compact JSON) -> introspection name */
    int next;
};

static const char *intro_type(struct intro *in, json_t *type);

static json_t *intro_members(struct intro *in, json_t *data)
{
    json_t *members = json_array();
    const char *key;
    json_t *t;
    json_object_foreach(data, key, t)
    {
        bool optional;
        const char *name = member_name(key, &optional);
        json_t *m = json_pack("{s:s, s:s}", "name", name, "type", intro_type(in, t));
        if (optional) {
            json_object_set_new(m, "default", json_null());
        }
        json_array_append_new(members, m);
    }
    return members;
}

/* Register `key` under a fresh number; returns the number's name. */
static const char *intro_new_name(struct intro *in, const char *key)
{
    char num[24];
    snprintf(num, sizeof(num), "%d", in->next++);
    json_object_set_new(in->names, key, json_string(num));
    return json_string_value(json_object_get(in->names, key));
}

static const char *intro_object(struct intro *in, const char *key, json_t *data)
{
    const char *name = intro_new_name(in, key);
    json_t *info = json_pack("{s:s, s:s}", "name", name, "meta-type", "object");
    json_array_append_new(in->out, info);
    json_object_set_new(info, "members", data ? intro_members(in, data) : json_array());
    return name;
}

static const char *intro_enum(struct intro *in, const char *key, json_t *values)
{
    const char *name = intro_new_name(in, key);
    json_t *members = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(values, i, v)
    {
        json_array_append_new(members, json_pack("{s:O}", "name", v));
    }
    json_array_append_new(in->out, json_pack("{s:s, s:s, s:O, s:o}", "name", name, "meta-type",
                                             "enum", "values", values, "members", members));
    return name;
}

static const char *intro_builtin(struct intro *in, const struct builtin *b)
{
    json_t *known = json_object_get(in->names, b->intro_name);
    if (known) {
        return json_string_value(known);
    }
    json_object_set_new(in->names, b->intro_name, json_string(b->intro_name));
    json_array_append_new(in->out, json_pack("{s:s, s:s, s:s}", "name", b->intro_name, "meta-type",
                                             "builtin", "json-type", b->json_type));
    return b->intro_name;
}

static const char *intro_array(struct intro *in, json_t *elem)
{
    const char *elem_name = intro_type(in, elem);
    char *name = NULL;
    if (asprintf(&name, "[%s]", elem_name) < 0) {
        abort();
    }
    json_t *known = json_object_get(in->names, name);
    if (!known) {
        json_object_set_new(in->names, name, json_string(name));
        json_array_append_new(in->out, json_pack("{s:s, s:s, s:s}", "name", name, "meta-type",
                                                 "array", "element-type", elem_name));
        known = json_object_get(in->names, name);
    }
    free(name);
    return json_string_value(known);
}

static const char *intro_type(struct intro *in, json_t *type)
{
    if (json_is_array(type)) {
        return intro_array(in, json_array_get(type, 0));
    }
    const char *name = json_string_value(type);
    const struct builtin *b = find_builtin(name);
    if (b) {
        return intro_builtin(in, b);
    }
    json_t *known = json_object_get(in->names, name);
    if (known) {
        return json_string_value(known);
    }
    json_t *def = json_object_get(in->s->types, name);
    if (!strcmp(def_kind(def), "enum")) {
        return intro_enum(in, name, json_object_get(def, "data"));
    }
    return intro_object(in, name, json_object_get(def, "data"));
}

/* The implicit argument object of a command or event ("0" when empty). */
static const char *intro_args(struct intro *in, const char *owner, json_t *data)
{
    if (!data || json_object_size(data) == 0) {
        return "0";
    }
    char *key = NULL;
    if (asprintf(&key, "%s (arguments)", owner) < 0) {
        abort();
    }
    const char *name = intro_object(in, key, data);
    free(key);
    return name;
}

static json_t *build_introspection(const struct qapi_schema *s)
{
    struct intro in = {.s = s, .out = json_array(), .names = json_object(), .next = 0};
    intro_object(&in, " empty", NULL); /* "0" */
    const char *name;
    json_t *def;
    json_object_foreach(s->commands, name, def)
    {
        json_t *info = json_pack("{s:s, s:s}", "name", name, "meta-type", "command");
        json_array_append_new(in.out, info);
        json_object_set_new(info, "arg-type",
                            json_string(intro_args(&in, name, json_object_get(def, "data"))));
        json_t *ret = json_object_get(def, "returns");
        json_object_set_new(info, "ret-type", json_string(ret ? intro_type(&in, ret) : "0"));
    }
    json_object_foreach(s->events, name, def)
    {
        json_t *info = json_pack("{s:s, s:s}", "name", name, "meta-type", "event");
        json_array_append_new(in.out, info);
        json_object_set_new(info, "arg-type",
                            json_string(intro_args(&in, name, json_object_get(def, "data"))));
    }
    json_decref(in.names);
    return in.out;
}
