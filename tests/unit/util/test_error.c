/* Unit tests for the error type: first error wins, prepend, propagate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "util/error.h"

static void test_first_error_wins(void **state)
{
    (void)state;
    struct error *err = NULL;
    error_setg(&err, "first %d", 1);
    error_set(&err, ERROR_CLASS_DEVICE_NOT_FOUND, "second");
    assert_string_equal(err->message, "first 1");
    assert_int_equal(err->cls, ERROR_CLASS_GENERIC);
    error_free(err);
    error_setg(NULL, "ignored");
}

static void test_errno_and_prepend(void **state)
{
    (void)state;
    struct error *err = NULL;
    error_setg_errno(&err, ENOENT, "open '%s'", "x.img");
    error_prepend(&err, "node '%s'", "disk0");
    assert_string_equal(err->message, "node 'disk0': open 'x.img': No such file or directory");
    struct error *dst = NULL;
    error_propagate(&dst, err);
    assert_ptr_equal(dst, err);
    error_free(dst);
}

static void test_class_names(void **state)
{
    (void)state;
    assert_string_equal(error_class_name(ERROR_CLASS_GENERIC), "GenericError");
    assert_string_equal(error_class_name(ERROR_CLASS_COMMAND_NOT_FOUND), "CommandNotFound");
    assert_string_equal(error_class_name(ERROR_CLASS_DEVICE_NOT_FOUND), "DeviceNotFound");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_first_error_wins),
            cmocka_unit_test(test_errno_and_prepend),
            cmocka_unit_test(test_class_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
