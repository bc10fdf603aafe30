/*
 * Unit tests of snapvm-ctl's output formats (tools/table.c): sizes as
 * people read them (never an exponent), dates, guest clocks, durations,
 * lists, and tables aligned to their content without trailing blanks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tools/ctl.h"

static void size_is(uint64_t bytes, const char *want)
{
    char buf[32];
    fmt_size(bytes, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static void test_sizes(void **state)
{
    (void)state;
    size_is(0, "0 B");
    size_is(1023, "1023 B");
    size_is(1024, "1 KiB");
    size_is(1536, "1.5 KiB");
    size_is(2160000, "2.06 MiB");
    size_is(10ull << 20, "10 MiB");
    size_is(258ull << 20, "258 MiB");
    size_is(1010ull << 20, "1010 MiB"); /* "%.3g" would say 1.01e+03 */
    size_is(1023ull << 20, "1023 MiB");
    size_is(1ull << 30, "1 GiB");
    size_is(1075848775ull, "1 GiB");
    size_is(3ull << 40, "3 TiB");
    size_is(UINT64_MAX, "16 EiB");
}

static void test_clock_and_duration(void **state)
{
    (void)state;
    char buf[32];
    fmt_clock(0, buf, sizeof(buf));
    assert_string_equal(buf, "00:00:00.000");
    fmt_clock(3723456000000ull, buf, sizeof(buf)); /* 1 h 2 min 3.456 s */
    assert_string_equal(buf, "01:02:03.456");
    fmt_duration(0.4, buf, sizeof(buf));
    assert_string_equal(buf, "0s");
    fmt_duration(59.6, buf, sizeof(buf));
    assert_string_equal(buf, "1:00");
    fmt_duration(3725, buf, sizeof(buf));
    assert_string_equal(buf, "1:02:05");
}

static void test_list(void **state)
{
    (void)state;
    json_t *names = json_pack("[s, s]", "disk0", "disk1");
    char *s = fmt_list(names);
    assert_string_equal(s, "disk0, disk1");
    free(s);
    json_decref(names);
    s = fmt_list(NULL);
    assert_string_equal(s, "-");
    free(s);
}

static void test_table(void **state)
{
    (void)state;
    static const char *const heads[] = {"TAG", "SIZE", "MARK"};
    struct table *t = table_new(3, heads);
    table_align_right(t, 1);
    const char *r1[] = {"a", "1 KiB", "*"};
    const char *r2[] = {"longer", "258 MiB", ""};
    const char *r3[] = {"├── b", NULL, ""}; /* tree lines: width in characters */
    table_add(t, r1);
    table_add(t, r2);
    table_add(t, r3);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    table_print(t, f);
    fclose(f);
    assert_string_equal(out, "TAG        SIZE  MARK\n"
                             "a         1 KiB  *\n"
                             "longer  258 MiB\n"
                             "├── b         -\n");
    free(out);
    table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_sizes),
            cmocka_unit_test(test_clock_and_duration),
            cmocka_unit_test(test_list),
            cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
