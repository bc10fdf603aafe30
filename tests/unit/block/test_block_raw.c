/*
 * Unit tests for the block graph with the file and raw drivers on real
 * temporary files: I/O, option checking, node-names and QEMU-compatible
 * image locking.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "block/block.h"
#include "util/keyval.h"

static char tmpl[] = "/tmp/snapvm-test-block-XXXXXX";
static char path[256];

static int setup(void **state)
{
    (void)state;
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    snprintf(path, sizeof(path), "%s/disk.raw", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), 1 << 20), 0);
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(tmpl);
    return 0;
}

static struct block_node *add(struct block_graph *g, const char *fmt, struct error **errp)
{
    char opts[512];
    snprintf(opts, sizeof(opts), fmt, path);
    json_t *o = keyval_parse_any(opts, NULL, NULL);
    assert_non_null(o);
    struct block_node *n = block_graph_add(g, o, errp);
    json_decref(o);
    return n;
}

static void expect_add_error(struct block_graph *g, const char *fmt, const char *needle)
{
    struct error *err = NULL;
    assert_null(add(g, fmt, &err));
    assert_non_null(err);
    if (!strstr(err->message, needle)) {
        fail_msg("message '%s' lacks '%s'", err->message, needle);
    }
    error_free(err);
}

static void test_raw_io(void **state)
{
    (void)state;
    struct block_graph *g = block_graph_new();
    struct block_node *n =
            add(g, "driver=raw,node-name=d0,file.driver=file,file.filename=%s", NULL);
    assert_non_null(n);
    assert_string_equal(block_node_driver(n), "raw");
    assert_string_equal(block_node_name(n), "d0");
    assert_int_equal(block_node_length(n), 1 << 20);
    assert_false(block_node_can_snapshot(n));
    struct block_node *child = block_node_file_child(n);
    assert_non_null(child);
    assert_string_equal(block_node_driver(child), "file");
    assert_ptr_equal(block_graph_next(g, NULL), child); /* the child is created first */
    assert_ptr_equal(block_graph_next(g, child), n);

    uint8_t buf[1000], back[1000];
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)(i * 7 + 3);
    }
    assert_int_equal(block_pwrite(n, 4093, buf, sizeof(buf), NULL), 0);
    assert_int_equal(block_flush(n, NULL), 0);
    assert_int_equal(block_pread(n, 4093, back, sizeof(back), NULL), 0);
    assert_memory_equal(buf, back, sizeof(buf));

    struct error *err = NULL;
    assert_int_equal(block_pread(n, (1 << 20) - 10, back, 11, &err), -1);
    assert_non_null(strstr(err->message, "beyond the end"));
    error_free(err);
    block_graph_free(g);

    /* The data really is in the file. */
    FILE *f = fopen(path, "rb");
    fseek(f, 4093, SEEK_SET);
    assert_int_equal(fread(back, 1, sizeof(back), f), sizeof(back));
    fclose(f);
    assert_memory_equal(buf, back, sizeof(back));
}

static void test_json_form_and_read_only(void **state)
{
    (void)state;
    struct block_graph *g = block_graph_new();
    struct block_node *n = add(g,
                               "{\"driver\": \"raw\", \"node-name\": \"r\", \"read-only\": true, "
                               "\"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}",
                               NULL);
    assert_non_null(n);
    assert_true(block_node_read_only(n));
    assert_true(block_node_read_only(block_node_file_child(n)));
    uint8_t b = 1;
    struct error *err = NULL;
    assert_int_equal(block_pwrite(n, 0, &b, 1, &err), -1);
    assert_non_null(strstr(err->message, "read-only"));
    error_free(err);
    /* Two readers share the image. */
    assert_non_null(
            add(g, "driver=raw,node-name=r2,read-only=on,file.driver=file,file.filename=%s", NULL));
    block_graph_free(g);
}

static void test_option_errors(void **state)
{
    (void)state;
    struct block_graph *g = block_graph_new();
    assert_non_null(add(g, "driver=file,node-name=f0,filename=%s", NULL));
    expect_add_error(g, "driver=file,node-name=f0,filename=%s", "duplicate node-name");
    expect_add_error(g, "driver=vmdk,node-name=x,file.filename=%s", "unknown driver 'vmdk'");
    expect_add_error(g, "driver=raw,node-name=x,bogus=1,file.driver=file,file.filename=%s",
                     "unknown option 'bogus'");
    expect_add_error(g, "driver=raw,node-name=x,file=nosuch", "no block node named 'nosuch'");
    expect_add_error(g, "driver=raw,node-name=x", "needs a 'file' child");
    expect_add_error(g, "driver=file,filename=%s", "'node-name' is required");
    expect_add_error(g, "driver=file,node-name=9bad,filename=%s", "invalid node-name");
    expect_add_error(g, "driver=raw,node-name=x,file.driver=file,file.filename=%s.missing",
                     "No such file");
    expect_add_error(g, "driver=raw,node-name=x,read-only=maybe,file.driver=file,file.filename=%s",
                     "'read-only'");
    block_graph_free(g);
}

static void test_locks(void **state)
{
    (void)state;
    struct block_graph *g = block_graph_new();
    assert_non_null(add(g, "driver=raw,node-name=w,file.driver=file,file.filename=%s", NULL));
    /* A second writer and a reader are both refused, as QEMU would be. */
    expect_add_error(g, "driver=raw,node-name=w2,file.driver=file,file.filename=%s",
                     "Failed to get \"write\" lock");
    expect_add_error(g, "driver=raw,node-name=w2,file.driver=file,file.filename=%s",
                     "already open in this process");
    expect_add_error(g, "driver=raw,node-name=w3,read-only=on,file.driver=file,file.filename=%s",
                     "Failed to get shared \"write\" lock");
    /* locking=off opts out, as in QEMU. */
    assert_non_null(add(g,
                        "driver=raw,node-name=w4,read-only=on,file.driver=file,file.locking=off,"
                        "file.filename=%s",
                        NULL));
    block_graph_free(g);
    /* Closing released the locks. */
    g = block_graph_new();
    assert_non_null(add(g, "driver=raw,node-name=w,file.driver=file,file.filename=%s", NULL));
    block_graph_free(g);
}

static void test_file_node_by_name(void **state)
{
    (void)state;
    struct block_graph *g = block_graph_new();
    assert_non_null(add(g, "driver=file,node-name=proto,filename=%s", NULL));
    struct block_node *n = add(g, "driver=raw,node-name=fmt,file=proto", NULL);
    assert_non_null(n);
    assert_ptr_equal(block_node_file_child(n), block_graph_find(g, "proto"));
    assert_null(block_graph_find(g, "nothere"));
    block_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_raw_io),
            cmocka_unit_test(test_json_form_and_read_only),
            cmocka_unit_test(test_option_errors),
            cmocka_unit_test(test_locks),
            cmocka_unit_test(test_file_node_by_name),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
