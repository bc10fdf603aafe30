/*
 * Unit tests for the schema: argument validation and its messages, return
 * and event checks, and the SchemaInfo rendering (every reference resolves).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "monitor/schema.h"

/* test-schema.json, checked and normalized by qapi-gen.py at build time. */
extern const char test_schema_json[];
static const char *test_schema = test_schema_json;

static struct qapi_schema *load(void)
{
    struct error *err = NULL;
    struct qapi_schema *s = qapi_schema_load(test_schema, &err);
    assert_null(err);
    assert_non_null(s);
    return s;
}

/* The error message for draw(args), or NULL if the arguments are valid. */
static char *check(struct qapi_schema *s, const char *args_json)
{
    json_t *args = json_loads(args_json, 0, NULL);
    assert_non_null(args);
    struct error *err = NULL;
    int ret = qapi_schema_check_args(s, "draw", args, &err);
    json_decref(args);
    assert_int_equal(ret < 0, err != NULL);
    if (!err) {
        return NULL;
    }
    char *msg = strdup(err->message);
    assert_int_equal(err->cls, ERROR_CLASS_GENERIC);
    error_free(err);
    return msg;
}

static void expect_error(struct qapi_schema *s, const char *args, const char *want)
{
    char *msg = check(s, args);
    assert_non_null(msg);
    assert_string_equal(msg, want);
    free(msg);
}

static void test_arguments(void **state)
{
    (void)state;
    struct qapi_schema *s = load();
    assert_null(check(s, "{\"tag\": \"a\"}"));
    assert_null(check(s, "{\"tag\": \"a\", \"color\": \"red\", \"points\": [{\"x\": 1}],"
                         " \"small\": 255, \"any\": [null, {}]}"));
    expect_error(s, "{}", "Parameter 'tag' is missing");
    expect_error(s, "{\"tag\": 1}", "Invalid parameter type for 'tag', expected: string");
    expect_error(s, "{\"tag\": null}", "Invalid parameter type for 'tag', expected: string");
    expect_error(s, "{\"tag\": \"a\", \"bogus\": 1}", "Parameter 'bogus' is unexpected");
    expect_error(s, "{\"tag\": \"a\", \"color\": \"blue\"}",
                 "Parameter 'color' does not accept value 'blue'");
    expect_error(s, "{\"tag\": \"a\", \"points\": {}}",
                 "Invalid parameter type for 'points', expected: array");
    expect_error(s, "{\"tag\": \"a\", \"points\": [{\"x\": 1}, {\"x\": \"1\"}]}",
                 "Invalid parameter type for 'points[1].x', expected: integer");
    expect_error(s, "{\"tag\": \"a\", \"points\": [{}]}", "Parameter 'points[0].x' is missing");
    expect_error(s, "{\"tag\": \"a\", \"points\": [{\"x\": 1, \"y\": 2}]}",
                 "Parameter 'points[0].y' is unexpected");
    expect_error(s, "{\"tag\": \"a\", \"small\": 256}", "Parameter 'small' expects uint8");
    expect_error(s, "{\"tag\": \"a\", \"small\": 1.5}",
                 "Invalid parameter type for 'small', expected: integer");
    qapi_schema_free(s);
}

/* A struct with a base, a flat union and an alternate, as QAPI has them. */
static void test_base_union_alternate(void **state)
{
    (void)state;
    struct qapi_schema *s = load();
    assert_null(check(s, "{\"tag\": \"a\", \"p3\": {\"x\": 1, \"z\": 2, \"label\": \"l\"}}"));
    expect_error(s, "{\"tag\": \"a\", \"p3\": {\"z\": 2}}", "Parameter 'p3.x' is missing");
    assert_null(check(s, "{\"tag\": \"a\", \"shape\": {\"kind\": \"circle\", \"radius\": 2.5}}"));
    assert_null(check(s, "{\"tag\": \"a\", \"shape\": {\"kind\": \"poly\", \"color\": \"red\","
                         " \"points\": [{\"x\": 1}]}}"));
    /* a case without a branch has the base's members only */
    assert_null(check(s, "{\"tag\": \"a\", \"shape\": {\"kind\": \"dot\"}}"));
    expect_error(s, "{\"tag\": \"a\", \"shape\": {\"kind\": \"dot\", \"radius\": 1}}",
                 "Parameter 'shape.radius' is unexpected");
    expect_error(s, "{\"tag\": \"a\", \"shape\": {\"kind\": \"circle\", \"points\": []}}",
                 "Parameter 'shape.radius' is missing");
    expect_error(s, "{\"tag\": \"a\", \"shape\": {\"radius\": 1}}",
                 "Parameter 'shape.kind' is missing");
    expect_error(s, "{\"tag\": \"a\", \"shape\": {\"kind\": \"square\"}}",
                 "Parameter 'shape.kind' does not accept value 'square'");
    expect_error(s, "{\"tag\": \"a\", \"shape\": {\"kind\": \"circle\", \"radius\": \"2\"}}",
                 "Invalid parameter type for 'shape.radius', expected: number");
    assert_null(check(s, "{\"tag\": \"a\", \"which\": \"first\"}"));
    assert_null(check(s, "{\"tag\": \"a\", \"which\": 3}"));
    assert_null(check(s, "{\"tag\": \"a\", \"which\": {\"x\": 3}}"));
    expect_error(s, "{\"tag\": \"a\", \"which\": {\"y\": 3}}", "Parameter 'which.x' is missing");
    expect_error(s, "{\"tag\": \"a\", \"which\": true}",
                 "Invalid parameter type for 'which', expected: NameOrIndex");
    expect_error(s, "{\"tag\": \"a\", \"which\": 1.5}",
                 "Invalid parameter type for 'which', expected: NameOrIndex");
    qapi_schema_free(s);
}

/* Only what qapi-gen.py emits loads; anything else is refused, not crashed on. */
static void test_load_refuses_foreign_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
            "{}",
            "[{\"command\": \"x\"}]", /* the source language, not the generator's output */
            "[{\"meta\": \"command\", \"name\": \"x\"}]",
            "[{\"meta\": \"command\", \"name\": \"x\", \"members\": [{\"name\": \"a\", \"type\": "
            "\"Nope\"}]}]",
            "[{\"meta\": \"enum\", \"name\": \"x\", \"values\": [\"a\"]},"
            " {\"meta\": \"event\", \"name\": \"x\", \"members\": []}]", /* one namespace */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct error *err = NULL;
        assert_null(qapi_schema_load(bad[i], &err));
        assert_non_null(err);
        error_free(err);
    }
}

static void test_unknown_command_and_no_args(void **state)
{
    (void)state;
    struct qapi_schema *s = load();
    json_t *args = json_object();
    struct error *err = NULL;
    assert_int_equal(qapi_schema_check_args(s, "noop", args, &err), 0);
    assert_int_equal(qapi_schema_check_args(s, "nope", args, &err), -1);
    assert_int_equal(err->cls, ERROR_CLASS_COMMAND_NOT_FOUND);
    assert_string_equal(err->message, "The command nope has not been found");
    error_free(err);
    err = NULL;
    json_object_set_new(args, "x", json_true());
    assert_int_equal(qapi_schema_check_args(s, "noop", args, &err), -1);
    assert_string_equal(err->message, "Parameter 'x' is unexpected");
    error_free(err);
    json_decref(args);
    qapi_schema_free(s);
}

static void test_returns_and_events(void **state)
{
    (void)state;
    struct qapi_schema *s = load();
    struct error *err = NULL;
    json_t *good = json_pack("{s:i}", "x", 3);
    json_t *bad = json_pack("{s:s}", "x", "3");
    json_t *empty = json_object();
    assert_int_equal(qapi_schema_check_return(s, "draw", good, &err), 0);
    assert_int_equal(qapi_schema_check_return(s, "noop", empty, &err), 0);
    assert_int_equal(qapi_schema_check_return(s, "noop", good, &err), -1);
    error_free(err);
    err = NULL;
    assert_int_equal(qapi_schema_check_return(s, "draw", bad, &err), -1);
    assert_non_null(strstr(err->message, "'return.x'"));
    error_free(err);
    err = NULL;
    json_t *ev = json_pack("{s:b}", "ok", 1);
    assert_int_equal(qapi_schema_check_event(s, "DONE", ev, &err), 0);
    assert_int_equal(qapi_schema_check_event(s, "DONE", NULL, &err), -1);
    error_free(err);
    err = NULL;
    assert_int_equal(qapi_schema_check_event(s, "NOPE", NULL, &err), -1);
    error_free(err);
    json_decref(ev);
    json_decref(good);
    json_decref(bad);
    json_decref(empty);
    qapi_schema_free(s);
}

static json_t *find_info(json_t *list, const char *name)
{
    size_t i;
    json_t *info;
    json_array_foreach(list, i, info)
    {
        if (!strcmp(json_string_value(json_object_get(info, "name")), name)) {
            return info;
        }
    }
    return NULL;
}

/* Every type an entry names is itself an entry of the list. */
static void assert_refs_resolve(json_t *list, json_t *info)
{
    const char *meta = json_string_value(json_object_get(info, "meta-type"));
    static const char *const ref_keys[] = {"arg-type", "ret-type", "element-type"};
    for (size_t k = 0; k < 3; k++) {
        json_t *ref = json_object_get(info, ref_keys[k]);
        if (ref) {
            assert_non_null(find_info(list, json_string_value(ref)));
        }
    }
    if (!strcmp(meta, "object") || !strcmp(meta, "alternate")) {
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(info, "members"), i, m)
        {
            assert_non_null(find_info(list, json_string_value(json_object_get(m, "type"))));
        }
        json_array_foreach(json_object_get(info, "variants"), i, m)
        {
            assert_non_null(find_info(list, json_string_value(json_object_get(m, "type"))));
        }
    }
}

static void test_introspection(void **state)
{
    (void)state;
    struct qapi_schema *s = load();
    json_t *list = qapi_schema_introspect(s);
    assert_true(json_array_size(list) > 5);
    size_t i;
    json_t *info;
    json_array_foreach(list, i, info)
    {
        assert_refs_resolve(list, info);
    }
    json_t *draw = find_info(list, "draw");
    assert_string_equal(json_string_value(json_object_get(draw, "meta-type")), "command");
    json_t *args = find_info(list, json_string_value(json_object_get(draw, "arg-type")));
    json_t *tag = json_array_get(json_object_get(args, "members"), 0);
    assert_string_equal(json_string_value(json_object_get(tag, "name")), "tag");
    assert_string_equal(json_string_value(json_object_get(tag, "type")), "str");
    assert_null(json_object_get(tag, "default"));
    json_t *color = json_array_get(json_object_get(args, "members"), 1);
    assert_true(json_is_null(json_object_get(color, "default")));
    json_t *color_t = find_info(list, json_string_value(json_object_get(color, "type")));
    assert_string_equal(json_string_value(json_object_get(color_t, "meta-type")), "enum");
    json_t *noop = find_info(list, "noop");
    assert_string_equal(json_string_value(json_object_get(noop, "arg-type")), "0");
    json_t *str = find_info(list, "str");
    assert_string_equal(json_string_value(json_object_get(str, "json-type")), "string");
    assert_non_null(find_info(list, "DONE"));
    assert_null(find_info(list, "Point")); /* names are masked, as in QEMU */
    /* the union: an object with the base's members, a tag and its variants */
    json_t *members = json_object_get(args, "members");
    json_t *shape = NULL, *which = NULL;
    json_array_foreach(members, i, info)
    {
        const char *n = json_string_value(json_object_get(info, "name"));
        json_t *t = find_info(list, json_string_value(json_object_get(info, "type")));
        if (!strcmp(n, "shape")) {
            shape = t;
        } else if (!strcmp(n, "which")) {
            which = t;
        }
    }
    assert_non_null(shape);
    assert_string_equal(json_string_value(json_object_get(shape, "meta-type")), "object");
    assert_string_equal(json_string_value(json_object_get(shape, "tag")), "kind");
    json_t *variants = json_object_get(shape, "variants");
    assert_int_equal(json_array_size(variants), 2);
    json_t *v0 = json_array_get(variants, 0);
    assert_string_equal(json_string_value(json_object_get(v0, "case")), "circle");
    json_t *circle = find_info(list, json_string_value(json_object_get(v0, "type")));
    assert_string_equal(json_string_value(json_object_get(
                                json_array_get(json_object_get(circle, "members"), 0), "name")),
                        "radius");
    assert_non_null(which);
    assert_string_equal(json_string_value(json_object_get(which, "meta-type")), "alternate");
    json_t *alts = json_object_get(which, "members");
    assert_int_equal(json_array_size(alts), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(alts, 0), "type")), "str");
    qapi_schema_free(s);
}

static void test_embedded_schema_loads(void **state)
{
    (void)state;
    struct error *err = NULL;
    struct qapi_schema *s = qapi_schema_load(qapi_schema_json, &err);
    assert_null(err);
    assert_true(qapi_schema_has_command(s, "query-jobs"));
    json_t *list = qapi_schema_introspect(s);
    size_t i;
    json_t *info;
    json_array_foreach(list, i, info)
    {
        assert_refs_resolve(list, info);
    }
    /* query-qmp-schema declares [SchemaInfo], and its answer is one */
    json_t *cmd = find_info(list, "query-qmp-schema");
    json_t *ret = find_info(list, json_string_value(json_object_get(cmd, "ret-type")));
    assert_string_equal(json_string_value(json_object_get(ret, "meta-type")), "array");
    json_t *elem = find_info(list, json_string_value(json_object_get(ret, "element-type")));
    assert_string_equal(json_string_value(json_object_get(elem, "tag")), "meta-type");
    assert_int_equal(json_array_size(json_object_get(elem, "variants")), 7);
    assert_int_equal(qapi_schema_check_return(s, "query-qmp-schema", list, &err), 0);
    json_t *broken = json_deep_copy(list);
    json_object_del(json_array_get(broken, 1), "arg-type"); /* a command */
    assert_int_equal(qapi_schema_check_return(s, "query-qmp-schema", broken, &err), -1);
    assert_non_null(strstr(err->message, "'return[1].arg-type' is missing"));
    error_free(err);
    json_decref(broken);
    qapi_schema_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_arguments),
            cmocka_unit_test(test_base_union_alternate),
            cmocka_unit_test(test_load_refuses_foreign_input),
            cmocka_unit_test(test_unknown_command_and_no_args),
            cmocka_unit_test(test_returns_and_events),
            cmocka_unit_test(test_introspection),
            cmocka_unit_test(test_embedded_schema_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
