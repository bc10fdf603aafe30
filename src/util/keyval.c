/*
 * QEMU-style key=value option strings into JSON objects (see keyval.h).
 */
#include "util/keyval.h"

#include <stdlib.h>
#include <string.h>

#include "util/size.h"

/* Read up to the next lone ',' (",," is a literal comma). Returns malloc'd text. */
static char *read_value(const char **pos)
{
    const char *p = *pos;
    size_t cap = strlen(p) + 1, n = 0;
    char *out = malloc(cap);
    if (!out) {
        abort();
    }
    while (*p) {
        if (*p == ',') {
            if (p[1] == ',') {
                out[n++] = ',';
                p += 2;
                continue;
            }
            break;
        }
        out[n++] = *p++;
    }
    out[n] = '\0';
    *pos = p;
    return out;
}

/* Store value at dotted key path inside root, creating intermediate objects. */
static int store_dotted(json_t *root, const char *key, const char *value, const char *whole,
                        struct error **errp)
{
    char *path = strdup(key);
    json_t *obj = root;
    char *save = NULL;
    char *part = strtok_r(path, ".", &save);
    int rc = -1;
    if (!part || key[0] == '.' || key[strlen(key) - 1] == '.' || strstr(key, "..")) {
        error_setg(errp, "invalid parameter name '%s' in '%s'", key, whole);
        goto out;
    }
    for (;;) {
        char *next = strtok_r(NULL, ".", &save);
        json_t *cur = json_object_get(obj, part);
        if (!next) {
            if (cur) {
                error_setg(errp, "parameter '%s' is given more than once in '%s'", key, whole);
                goto out;
            }
            json_object_set_new(obj, part, json_string(value));
            break;
        }
        if (!cur) {
            cur = json_object();
            json_object_set_new(obj, part, cur);
        } else if (!json_is_object(cur)) {
            error_setg(errp, "parameter '%s' conflicts with a value given for '%s' in '%s'", key,
                       part, whole);
            goto out;
        }
        obj = cur;
        part = next;
    }
    rc = 0;
out:
    free(path);
    return rc;
}

json_t *keyval_parse(const char *str, const char *implied_key, struct error **errp)
{
    json_t *root = json_object();
    const char *p = str;
    bool first = true;
    while (*p) {
        const char *eq = strchr(p, '=');
        const char *comma = strchr(p, ',');
        char *key = NULL;
        if (!eq || (comma && comma < eq)) {
            if (!(first && implied_key)) {
                size_t len = comma ? (size_t)(comma - p) : strlen(p);
                error_setg(errp, "expected key=value, got '%.*s' in '%s'", (int)len, p, str);
                goto fail;
            }
            key = strdup(implied_key);
        } else {
            key = strndup(p, (size_t)(eq - p));
            p = eq + 1;
        }
        if (!*key) {
            error_setg(errp, "empty parameter name in '%s'", str);
            free(key);
            goto fail;
        }
        char *value = read_value(&p);
        int rc = store_dotted(root, key, value, str, errp);
        free(key);
        free(value);
        if (rc < 0) {
            goto fail;
        }
        if (*p == ',') {
            p++;
            if (!*p) {
                error_setg(errp, "trailing comma in '%s'", str);
                goto fail;
            }
        }
        first = false;
    }
    return root;
fail:
    json_decref(root);
    return NULL;
}

json_t *keyval_parse_any(const char *str, const char *implied_key, struct error **errp)
{
    if (str[0] != '{') {
        return keyval_parse(str, implied_key, errp);
    }
    json_error_t jerr;
    json_t *obj = json_loads(str, 0, &jerr);
    if (!obj) {
        error_setg(errp, "invalid JSON in '%s': %s (column %d)", str, jerr.text, jerr.column);
        return NULL;
    }
    if (!json_is_object(obj)) {
        error_setg(errp, "expected a JSON object in '%s'", str);
        json_decref(obj);
        return NULL;
    }
    return obj;
}

int kv_get_string(json_t *obj, const char *key, const char *what, const char **out,
                  struct error **errp)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        return 0;
    }
    if (!json_is_string(v)) {
        error_setg(errp, "%s: parameter '%s' expects a string", what, key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

int kv_get_bool(json_t *obj, const char *key, const char *what, bool *out, struct error **errp)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        return 0;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    const char *s = json_string_value(v);
    if (s && (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "yes"))) {
        *out = true;
        return 0;
    }
    if (s && (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "no"))) {
        *out = false;
        return 0;
    }
    error_setg(errp, "%s: parameter '%s' expects 'on' or 'off'", what, key);
    return -1;
}

static int kv_get_number(json_t *obj, const char *key, const char *what, uint64_t unit,
                         uint64_t *out, struct error **errp)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        return 0;
    }
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0) {
            error_setg(errp, "%s: parameter '%s' must not be negative", what, key);
            return -1;
        }
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    const char *s = json_string_value(v);
    if (!s) {
        error_setg(errp, "%s: parameter '%s' expects a number", what, key);
        return -1;
    }
    struct error *err = NULL;
    if (unit == 0) {
        char *end = NULL;
        unsigned long long n = strtoull(s, &end, 0);
        if (!*s || *end || s[0] == '-') {
            error_setg(errp, "%s: parameter '%s' expects a number, got '%s'", what, key, s);
            return -1;
        }
        *out = n;
        return 0;
    }
    if (size_parse(s, unit, out, &err) < 0) {
        error_setg(errp, "%s: parameter '%s': %s", what, key, err->message);
        error_free(err);
        return -1;
    }
    return 0;
}

int kv_get_uint(json_t *obj, const char *key, const char *what, uint64_t *out, struct error **errp)
{
    return kv_get_number(obj, key, what, 0, out, errp);
}

int kv_get_size(json_t *obj, const char *key, const char *what, uint64_t *out, struct error **errp)
{
    return kv_get_number(obj, key, what, 1, out, errp);
}

int kv_check_keys(json_t *obj, const char *const *allowed, const char *what, struct error **errp)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++) {
            if (!strcmp(*a, key)) {
                ok = true;
                break;
            }
        }
        if (!ok) {
            error_setg(errp, "%s: unknown parameter '%s'", what, key);
            return -1;
        }
    }
    return 0;
}
