/* Unit tests for the QEMU-style key=value parser and its typed accessors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "util/keyval.h"

static void test_dotted_nesting(void **state)
{
    (void)state;
    json_t *o = keyval_parse("driver=qcow2,node-name=disk0,file.driver=file,file.filename=a.qcow2",
                             NULL, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "driver")), "qcow2");
    json_t *file = json_object_get(o, "file");
    assert_true(json_is_object(file));
    assert_string_equal(json_string_value(json_object_get(file, "filename")), "a.qcow2");
    json_decref(o);
}

static void test_comma_escape_and_implied(void **state)
{
    (void)state;
    json_t *o = keyval_parse("unix:/tmp/a,,b.sock,server=on,wait=off", "path", NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "path")), "unix:/tmp/a,b.sock");
    bool server = false, wait = true;
    assert_int_equal(kv_get_bool(o, "server", "-qmp", &server, NULL), 0);
    assert_int_equal(kv_get_bool(o, "wait", "-qmp", &wait, NULL), 0);
    assert_true(server);
    assert_false(wait);
    json_decref(o);
}

static void expect_parse_error(const char *str, const char *needle)
{
    struct error *err = NULL;
    assert_null(keyval_parse(str, NULL, &err));
    assert_non_null(err);
    if (!strstr(err->message, needle)) {
        fail_msg("message '%s' lacks '%s'", err->message, needle);
    }
    error_free(err);
}

static void test_errors(void **state)
{
    (void)state;
    expect_parse_error("a=1,a=2", "more than once");
    expect_parse_error("a=1,a.b=2", "conflicts");
    expect_parse_error("novalue", "expected key=value");
    expect_parse_error("=x", "empty parameter");
    expect_parse_error("a=1,", "trailing comma");
    expect_parse_error("a..b=1", "invalid parameter name");
}

static void test_json_form_and_types(void **state)
{
    (void)state;
    struct error *err = NULL;
    json_t *o =
            keyval_parse_any("{\"read-only\": true, \"size\": 512, \"name\": \"x\"}", NULL, &err);
    assert_non_null(o);
    bool ro = false;
    uint64_t size = 0;
    assert_int_equal(kv_get_bool(o, "read-only", "t", &ro, NULL), 0);
    assert_true(ro);
    assert_int_equal(kv_get_uint(o, "size", "t", &size, NULL), 0);
    assert_int_equal(size, 512);
    assert_int_equal(kv_get_bool(o, "name", "t", &ro, &err), -1);
    assert_non_null(strstr(err->message, "'name'"));
    error_free(err);
    err = NULL;
    const char *allowed[] = {"read-only", "size", NULL};
    assert_int_equal(kv_check_keys(o, allowed, "-blockdev", &err), -1);
    assert_non_null(strstr(err->message, "unknown parameter 'name'"));
    error_free(err);
    json_decref(o);

    err = NULL;
    assert_null(keyval_parse_any("{\"a\": ", NULL, &err));
    assert_non_null(strstr(err->message, "invalid JSON"));
    error_free(err);
}

static void test_sizes_in_strings(void **state)
{
    (void)state;
    json_t *o = keyval_parse("size=64K,bad=12X", NULL, NULL);
    uint64_t v = 0;
    struct error *err = NULL;
    assert_int_equal(kv_get_size(o, "size", "t", &v, NULL), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(kv_get_size(o, "bad", "t", &v, &err), -1);
    assert_non_null(strstr(err->message, "'bad'"));
    error_free(err);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_dotted_nesting),
            cmocka_unit_test(test_comma_escape_and_implied),
            cmocka_unit_test(test_errors),
            cmocka_unit_test(test_json_form_and_types),
            cmocka_unit_test(test_sizes_in_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
