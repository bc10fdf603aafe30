/*
 * QEMU-style option strings, turned into JSON objects.
 *
 * "driver=qcow2,node-name=disk0,file.driver=file,file.filename=a.qcow2"
 * becomes {"driver": "qcow2", "node-name": "disk0",
 *          "file": {"driver": "file", "filename": "a.qcow2"}}.
 * A literal comma inside a value is written ",,".  Values stay strings (as in
 * QEMU's keyval); the kv_get_* accessors below convert them, and accept the
 * typed values of the JSON form (-blockdev '{"driver": ...}') just the same,
 * so every consumer handles both spellings through one path.
 */
#ifndef SNAPVM_UTIL_KEYVAL_H
#define SNAPVM_UTIL_KEYVAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

/*
 * Parse `str`.  If `implied_key` is non-NULL, a first element without '='
 * is the value of that key (as in "-serial file:x" or "unix:PATH,server=on").
 * Returns a new object, or NULL with *errp set (duplicate key, empty key,
 * a key that is both a value and an object, ...).
 */
json_t *keyval_parse(const char *str, const char *implied_key, struct error **errp);

/*
 * Parse an option argument that is either a JSON object (starts with '{')
 * or the dotted key=value form.
 */
json_t *keyval_parse_any(const char *str, const char *implied_key, struct error **errp);

/*
 * Typed accessors.  `what` names the option in error messages
 * (e.g. "-blockdev"). A missing key yields the default and returns 0; a
 * present key of the wrong type is an error naming the key.
 */
int kv_get_string(json_t *obj, const char *key, const char *what, const char **out,
                  struct error **errp);
int kv_get_bool(json_t *obj, const char *key, const char *what, bool *out, struct error **errp);
int kv_get_uint(json_t *obj, const char *key, const char *what, uint64_t *out, struct error **errp);
/* Like kv_get_uint but accepts size suffixes in the string form. */
int kv_get_size(json_t *obj, const char *key, const char *what, uint64_t *out, struct error **errp);

/*
 * Fail if `obj` has a key not listed in the NULL-terminated `allowed` array.
 */
int kv_check_keys(json_t *obj, const char *const *allowed, const char *what, struct error **errp);

#endif
