/* Unit tests for size_parse/size_format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "util/size.h"

static void test_suffixes(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(size_parse("4096", 1, &v, NULL), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(size_parse("64K", 1, &v, NULL), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(size_parse("128M", 1, &v, NULL), 0);
    assert_int_equal(v, 128ULL << 20);
    assert_int_equal(size_parse("8G", 1, &v, NULL), 0);
    assert_int_equal(v, 8ULL << 30);
    assert_int_equal(size_parse("2t", 1, &v, NULL), 0);
    assert_int_equal(v, 2ULL << 40);
}

static void test_default_unit(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(size_parse("256", 1 << 20, &v, NULL), 0);
    assert_int_equal(v, 256ULL << 20);
    assert_int_equal(size_parse("1G", 1 << 20, &v, NULL), 0);
    assert_int_equal(v, 1ULL << 30);
}

static void test_errors_name_input(void **state)
{
    (void)state;
    const char *bad[] = {"", "abc", "12Q", "-5", "1MB", "99999999999999999999", "20E"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 0;
        struct error *err = NULL;
        assert_int_equal(size_parse(bad[i], 1, &v, &err), -1);
        assert_non_null(err);
        assert_non_null(strstr(err->message, "invalid size"));
        assert_non_null(strstr(err->message, bad[i]));
        error_free(err);
    }
}

static void test_format(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(size_format(512, buf, sizeof(buf)), "512 B");
    assert_string_equal(size_format(64 << 10, buf, sizeof(buf)), "64 KiB");
    assert_string_equal(size_format(3ULL << 29, buf, sizeof(buf)), "1.5 GiB");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_suffixes),
            cmocka_unit_test(test_default_unit),
            cmocka_unit_test(test_errors_name_input),
            cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
