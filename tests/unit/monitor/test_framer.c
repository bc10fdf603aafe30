/* Unit tests for the QMP input framer: streams, splits, limits, resets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "monitor/framer.h"

/* Next frame as a NUL-terminated copy, or NULL if none is complete. */
static char *next(struct framer *f)
{
    const char *frame;
    size_t len;
    struct error *err = NULL;
    enum framer_result r = framer_next(f, &frame, &len, &err);
    assert_null(err);
    return r == FRAMER_FRAME ? strndup(frame, len) : NULL;
}

static void expect(struct framer *f, const char *want)
{
    char *got = next(f);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_several_in_one_read(void **state)
{
    (void)state;
    struct framer f;
    framer_init(&f);
    const char *in = "{\"a\": 1}\r\n  {\"b\": [1, {\"c\": \"}\"}]}{}[1,2] 42 \"s\\\"}\" true ";
    framer_append(&f, in, strlen(in));
    expect(&f, "{\"a\": 1}");
    expect(&f, "{\"b\": [1, {\"c\": \"}\"}]}");
    expect(&f, "{}");
    expect(&f, "[1,2]");
    expect(&f, "42");
    expect(&f, "\"s\\\"}\"");
    expect(&f, "true");
    assert_null(next(&f));
    assert_int_equal(framer_buffered(&f), 0);
    framer_destroy(&f);
}

static void test_split_byte_by_byte(void **state)
{
    (void)state;
    struct framer f;
    framer_init(&f);
    const char *in = "{\"execute\": \"x\\\\\", \"arguments\": {\"k\": \"{[\"}}";
    for (size_t i = 0; in[i]; i++) {
        assert_null(next(&f));
        framer_append(&f, &in[i], 1);
    }
    expect(&f, in);
    framer_destroy(&f);
}

static void test_scalar_waits_for_delimiter(void **state)
{
    (void)state;
    struct framer f;
    framer_init(&f);
    framer_append(&f, "12", 2);
    assert_null(next(&f));
    framer_append(&f, "3{", 2);
    expect(&f, "123");
    framer_append(&f, "}", 1);
    expect(&f, "{}");
    framer_destroy(&f);
}

static void test_oversized_is_skipped(void **state)
{
    (void)state;
    struct framer f;
    framer_init(&f);
    framer_append(&f, "{\"x\": \"", 7);
    char *chunk = malloc(65536);
    memset(chunk, 'a', 65536);
    int errors = 0;
    for (int i = 0; i < 20; i++) { /* 1.25 MiB: over the limit */
        framer_append(&f, chunk, 65536);
        const char *frame;
        size_t len;
        struct error *err = NULL;
        while (framer_next(&f, &frame, &len, &err) == FRAMER_ERROR) {
            assert_non_null(strstr(err->message, "size limit"));
            error_free(err);
            err = NULL;
            errors++;
        }
        assert_true(framer_buffered(&f) <= QMP_MAX_MESSAGE + 65536);
    }
    free(chunk);
    assert_int_equal(errors, 1);
    framer_append(&f, "\"} {\"ok\": 1}", 12);
    expect(&f, "{\"ok\": 1}");
    framer_destroy(&f);
}

static void test_control_char_resets(void **state)
{
    (void)state;
    struct framer f;
    framer_init(&f);
    const char *in = "{\"execute\": [[\x01{\"a\":1}";
    framer_append(&f, in, strlen(in));
    const char *frame;
    size_t len;
    struct error *err = NULL;
    assert_int_equal(framer_next(&f, &frame, &len, &err), FRAMER_ERROR);
    assert_non_null(strstr(err->message, "0x01"));
    error_free(err);
    expect(&f, "{\"a\":1}");
    framer_destroy(&f);
}

static void expect_error(struct framer *f, const char *what)
{
    const char *frame;
    size_t len;
    struct error *err = NULL;
    assert_int_equal(framer_next(f, &frame, &len, &err), FRAMER_ERROR);
    assert_non_null(err);
    assert_non_null(strstr(err->message, what));
    error_free(err);
}

/*
 * A bad byte inside a string: one error, then the rest of the broken line is
 * skipped up to a structural character (each stray closer is a message of
 * its own, as in QEMU), and the next command is framed whole.
 */
static void test_bad_byte_in_string_resyncs(void **state)
{
    (void)state;
    static const unsigned char bad[] = {0x00, 0x01, 0x1f, 0xfe, 0xff, '\n', '\t'};
    for (size_t i = 0; i < sizeof(bad); i++) {
        struct framer f;
        framer_init(&f);
        const char *head = "{\"execute\": \"x\", \"arguments\": {\"t\": \"a";
        const char *tail = "b\"}}\r\n{\"execute\": \"ok\"}";
        framer_append(&f, head, strlen(head));
        assert_null(next(&f));
        framer_append(&f, &bad[i], 1);
        framer_append(&f, tail, strlen(tail));
        char hex[8];
        snprintf(hex, sizeof(hex), "0x%02x", bad[i]);
        expect_error(&f, hex);
        expect(&f, "}");
        expect(&f, "}");
        expect(&f, "{\"execute\": \"ok\"}");
        assert_null(next(&f));
        framer_destroy(&f);
    }
}

/* Outside strings, a byte no JSON token starts with is an error too. */
static void test_bad_byte_outside_string(void **state)
{
    (void)state;
    struct framer f;
    framer_init(&f);
    const char *in = "{\"a\": @junk \"q}\n{\"b\": 1}";
    framer_append(&f, in, strlen(in));
    expect_error(&f, "0x40");
    expect(&f, "}");
    expect(&f, "{\"b\": 1}");
    framer_destroy(&f);
}

static void test_deep_nesting_is_refused(void **state)
{
    (void)state;
    struct framer f;
    framer_init(&f);
    char deep[3000];
    memset(deep, '[', 1500);
    memset(deep + 1500, ']', 1500);
    framer_append(&f, deep, sizeof(deep));
    const char *frame;
    size_t len;
    struct error *err = NULL;
    assert_int_equal(framer_next(&f, &frame, &len, &err), FRAMER_ERROR);
    assert_non_null(strstr(err->message, "nesting"));
    error_free(err);
    framer_append(&f, " [1]", 4);
    expect(&f, "[1]");
    framer_destroy(&f);
}

static void expect_requote(const char *in, const char *want)
{
    size_t len = 0;
    char *out = framer_requote(in, strlen(in), &len);
    if (!want) {
        assert_null(out);
        return;
    }
    assert_non_null(out);
    assert_int_equal(len, strlen(want));
    assert_string_equal(out, want);
    free(out);
}

static void test_single_quotes(void **state)
{
    (void)state;
    struct framer f;
    framer_init(&f);
    const char *in = "{'execute': 'a}\\'\\\\', 'x': '\"{'}{\"q\": \"it\\'s\"}";
    framer_append(&f, in, strlen(in));
    expect(&f, "{'execute': 'a}\\'\\\\', 'x': '\"{'}");
    expect(&f, "{\"q\": \"it\\'s\"}");
    framer_destroy(&f);
    expect_requote("{\"a\": 1}", NULL);
    expect_requote("{'execute': 'x', 'id': 'it\\'s'}", "{\"execute\": \"x\", \"id\": \"it's\"}");
    expect_requote("['\"', \"'\", \"\\'\", '\\n']", "[\"\\\"\", \"'\", \"'\", \"\\n\"]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_several_in_one_read),
            cmocka_unit_test(test_split_byte_by_byte),
            cmocka_unit_test(test_scalar_waits_for_delimiter),
            cmocka_unit_test(test_oversized_is_skipped),
            cmocka_unit_test(test_control_char_resets),
            cmocka_unit_test(test_deep_nesting_is_refused),
            cmocka_unit_test(test_bad_byte_in_string_resyncs),
            cmocka_unit_test(test_bad_byte_outside_string),
            cmocka_unit_test(test_single_quotes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
