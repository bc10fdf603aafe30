/*
 * Unit tests for the qcow2 driver on hand-built images laid out from the
 * qcow2 specification (no qemu-img needed): header parsing, refcount
 * encodings of every width, allocation, copy-on-write with snapshots, the
 * COPIED flags, vmstate, and concurrent use of one node from several
 * threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "block/block.h"
#include "util/keyval.h"

static char dir_tmpl[] = "/tmp/snapvm-test-qcow2-XXXXXX";
static char path[256];

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/*
 * A fresh v3 image: cluster 0 header, 1 refcount table, 2 refcount block,
 * 3 L1 table; those four clusters have refcount 1.
 */
static void make_image(unsigned cluster_bits, unsigned refcount_order, uint64_t size)
{
    uint64_t cs = 1ull << cluster_bits;
    uint64_t l2_span = cs / 8 * cs;
    uint32_t l1_size = (uint32_t)((size + l2_span - 1) / l2_span);
    assert_true(l1_size * 8 <= cs);
    uint8_t *img = calloc(4, cs);
    uint8_t *h = img;
    put_be(h, 0x514649fb, 4);
    put_be(h + 4, 3, 4);
    put_be(h + 20, cluster_bits, 4);
    put_be(h + 24, size, 8);
    put_be(h + 36, l1_size, 4);
    put_be(h + 40, 3 * cs, 8);
    put_be(h + 48, 1 * cs, 8);
    put_be(h + 56, 1, 4);
    put_be(h + 96, refcount_order, 4);
    put_be(h + 100, 104, 4);
    put_be(img + cs, 2 * cs, 8); /* refcount table entry 0 -> block at cluster 2 */
    unsigned bits = 1u << refcount_order;
    for (unsigned c = 0; c < 4; c++) {
        uint64_t bit = (uint64_t)c * bits;
        if (bits < 8) {
            img[2 * cs + bit / 8] |= (uint8_t)(1u << (bit % 8));
        } else {
            put_be(img + 2 * cs + bit / 8, 1, (int)bits / 8);
        }
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(img, 1, 4 * cs, f), 4 * cs);
    fclose(f);
    free(img);
}

static uint8_t *read_file(size_t *len)
{
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc(*len);
    assert_int_equal(fread(d, 1, *len, f), *len);
    fclose(f);
    return d;
}

/* Refcount of cluster c, decoded straight from the file (block at cluster 2). */
static uint64_t raw_refcount(unsigned cluster_bits, unsigned order, uint64_t c)
{
    size_t len;
    uint8_t *d = read_file(&len);
    uint64_t cs = 1ull << cluster_bits;
    uint64_t block = get_be(d + cs, 8); /* first refcount table entry */
    unsigned bits = 1u << order;
    uint64_t bit = c * bits, v;
    if (bits < 8) {
        v = (d[block + bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    } else {
        v = get_be(d + block + bit / 8, (int)bits / 8);
    }
    free(d);
    return v;
}

static int setup(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(dir_tmpl));
    snprintf(path, sizeof(path), "%s/t.qcow2", dir_tmpl);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(dir_tmpl);
    return 0;
}

static struct block_node *open_image(struct block_graph *g, struct error **errp)
{
    char opts[512];
    snprintf(opts, sizeof(opts),
             "driver=qcow2,node-name=q,cache.no-flush=on,file.driver=file,file.filename=%s", path);
    json_t *o = keyval_parse(opts, NULL, NULL);
    struct block_node *n = block_graph_add(g, o, errp);
    json_decref(o);
    return n;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)((i * 131 + seed * 7) ^ (i >> 9));
    }
}

static void test_io_roundtrip(void **state)
{
    (void)state;
    make_image(12, 4, 1 << 20);
    struct block_graph *g = block_graph_new();
    struct block_node *n = open_image(g, NULL);
    assert_non_null(n);
    assert_int_equal(block_node_length(n), 1 << 20);
    assert_int_equal(block_node_cluster_size(n), 4096);
    assert_true(block_node_can_snapshot(n));
    static uint8_t buf[100000], back[100000];
    fill(buf, sizeof(buf), 1);
    assert_int_equal(block_pwrite(n, 12345, buf, sizeof(buf), NULL), 0);
    memset(back, 0, sizeof(back));
    assert_int_equal(block_pread(n, 12345, back, sizeof(back), NULL), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    block_graph_free(g);
    /* Persisted: a new open sees the same bytes, and zeros elsewhere. */
    g = block_graph_new();
    n = open_image(g, NULL);
    assert_int_equal(block_pread(n, 12345, back, sizeof(back), NULL), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    assert_int_equal(block_pread(n, 0, back, 12345, NULL), 0);
    for (int i = 0; i < 12345; i++) {
        assert_int_equal(back[i], 0);
    }
    block_graph_free(g);
}

static void test_refcount_widths(void **state)
{
    (void)state;
    for (unsigned order = 0; order <= 6; order++) {
        make_image(9, order, 256 << 10);
        struct block_graph *g = block_graph_new();
        struct block_node *n = open_image(g, NULL);
        assert_non_null(n);
        uint8_t b[512];
        fill(b, sizeof(b), order);
        /* First write allocates the L2 table (cluster 4) and data (cluster 5). */
        assert_int_equal(block_pwrite(n, 0, b, sizeof(b), NULL), 0);
        block_graph_free(g);
        for (unsigned c = 0; c < 6; c++) {
            assert_int_equal(raw_refcount(9, order, c), 1);
        }
        assert_int_equal(raw_refcount(9, order, 6), 0);
    }
}

static uint64_t l2_entry_of_cluster0(void)
{
    size_t len;
    uint8_t *d = read_file(&len);
    uint64_t l1 = get_be(d + 40, 8);
    uint64_t l2 = get_be(d + l1, 8) & 0x00fffffffffffe00ull;
    uint64_t e = l2 ? get_be(d + l2, 8) : 0;
    free(d);
    return e;
}

static void test_snapshot_cow_and_copied_flags(void **state)
{
    (void)state;
    make_image(12, 4, 1 << 20);
    struct block_graph *g = block_graph_new();
    struct block_node *n = open_image(g, NULL);
    uint8_t a[4096], b[4096], back[4096];
    fill(a, sizeof(a), 1);
    fill(b, sizeof(b), 2);
    assert_int_equal(block_pwrite(n, 0, a, sizeof(a), NULL), 0);
    uint64_t e = l2_entry_of_cluster0();
    assert_true(e & (1ull << 63)); /* refcount 1: COPIED */
    assert_int_equal(block_vmstate_write(n, 0, b, 3000, NULL), 0);
    struct block_snapshot_info info = {.name = "s", .vm_state_size = 3000, .vm_clock_nsec = 42};
    assert_int_equal(block_snapshot_create(n, &info, NULL), 0);
    assert_string_equal(info.id, "1");
    assert_false(l2_entry_of_cluster0() & (1ull << 63)); /* shared now */
    assert_int_equal(block_pwrite(n, 100, b, 200, NULL), 0);
    assert_int_equal(block_pread(n, 0, back, sizeof(back), NULL), 0);
    assert_memory_equal(back, a, 100);
    assert_memory_equal(back + 100, b, 200);
    assert_memory_equal(back + 300, a + 300, sizeof(a) - 300);
    assert_int_equal(block_snapshot_vmstate_read(n, "s", 0, back, 3000, NULL), 0);
    assert_memory_equal(back, b, 3000);
    struct block_snapshot_info found;
    assert_int_equal(block_snapshot_find(n, "1", &found), 0);
    assert_int_equal(found.vm_clock_nsec, 42);
    assert_int_equal(found.vm_state_size, 3000);
    assert_int_equal(block_snapshot_find(n, "nope", NULL), -1);

    assert_int_equal(block_snapshot_goto(n, "s", NULL), 0);
    assert_int_equal(block_pread(n, 0, back, sizeof(back), NULL), 0);
    assert_memory_equal(back, a, sizeof(a));
    assert_int_equal(block_snapshot_delete(n, "s", NULL), 0);
    /* Sole owner again: the COPIED flag is back. */
    assert_true(l2_entry_of_cluster0() & (1ull << 63));
    size_t count;
    struct block_snapshot_info *list;
    assert_int_equal(block_snapshot_list(n, &list, &count, NULL), 0);
    assert_int_equal(count, 0);
    free(list);
    block_graph_free(g);
}

static void test_vmstate_map(void **state)
{
    (void)state;
    make_image(12, 4, 1 << 20);
    struct block_graph *g = block_graph_new();
    struct block_node *n = open_image(g, NULL);
    static uint8_t vm[5 * 4096];
    fill(vm, sizeof(vm), 9);
    /* Pages 0-1 and 3-4 written, page 2 left as a hole. */
    assert_int_equal(block_vmstate_write(n, 0, vm, 2 * 4096, NULL), 0);
    assert_int_equal(block_vmstate_write(n, 3 * 4096, vm + 3 * 4096, 2 * 4096, NULL), 0);
    struct block_snapshot_info info = {.name = "m", .vm_state_size = sizeof(vm)};
    assert_int_equal(block_snapshot_create(n, &info, NULL), 0);
    struct block_extent *ext;
    size_t count;
    assert_int_equal(block_snapshot_vmstate_map(n, "m", 0, sizeof(vm), &ext, &count, NULL), 0);
    int fd = block_node_host_fd(n);
    assert_true(fd >= 0);
    uint64_t covered = 0;
    int zero_extents = 0;
    for (size_t i = 0; i < count; i++) {
        assert_int_equal(ext[i].pos, covered);
        covered += ext[i].len;
        if (ext[i].kind == BLOCK_EXTENT_ZERO) {
            zero_extents++;
            assert_int_equal(ext[i].pos, 2 * 4096);
            assert_int_equal(ext[i].len, 4096);
            continue;
        }
        assert_int_equal(ext[i].kind, BLOCK_EXTENT_DATA);
        uint8_t *d = malloc(ext[i].len);
        assert_int_equal(pread(fd, d, ext[i].len, (off_t)ext[i].host_offset), (ssize_t)ext[i].len);
        assert_memory_equal(d, vm + ext[i].pos, ext[i].len);
        free(d);
    }
    assert_int_equal(covered, sizeof(vm));
    assert_int_equal(zero_extents, 1);
    free(ext);
    struct error *err = NULL;
    assert_int_equal(block_snapshot_vmstate_map(n, "m", 1, sizeof(vm), &ext, &count, &err), -1);
    assert_non_null(strstr(err->message, "beyond the vmstate"));
    error_free(err);
    block_graph_free(g);
}

/*
 * The RAM writer rewriting a cluster in place (a later pre-copy round): a
 * page the guest zeroed since it was stored becomes a hole and reads as
 * zeros, a page that became non-zero is written, and the page map follows.
 */
static void test_vmstate_ram_rewrite_in_place(void **state)
{
    (void)state;
    make_image(16, 4, 1 << 20);
    struct block_graph *g = block_graph_new();
    struct block_node *n = open_image(g, NULL);
    enum { PAGES = 32 }; /* two 64 KiB clusters */
    static uint8_t ram[PAGES * 4096], back[PAGES * 4096];
    fill(ram, sizeof(ram), 5);
    for (int i = 1; i < PAGES; i += 2) {
        memset(ram + i * 4096, 0, 4096); /* zero pages interleaved at 4 KiB */
    }
    uint64_t map[2] = {0};
    struct block_vmstate_run run = {.pos = 0, .buf = ram, .len = sizeof(ram)};
    assert_int_equal(block_vmstate_write_ram(n, &run, 1, map, 0, false, NULL), 0);
    assert_int_equal(map[0], 0x55555555u);
    memset(ram + 2 * 4096, 0, 4096); /* stored non-zero: must become a hole */
    fill(ram + 3 * 4096, 4096, 6);   /* was a hole: must be written */
    assert_int_equal(block_vmstate_write_ram(n, &run, 1, map, 0, false, NULL), 0);
    assert_int_equal(map[0], 0x55555559u);
    assert_int_equal(block_vmstate_read(n, 0, back, sizeof(back), NULL), 0);
    assert_memory_equal(back, ram, sizeof(ram));
    /* On the host: page 2 is a hole now, pages 3 and 4 data, 5 a hole. */
    struct block_snapshot_info info = {.name = "r", .vm_state_size = sizeof(ram)};
    assert_int_equal(block_snapshot_create(n, &info, NULL), 0);
    struct block_extent *ext;
    size_t count;
    assert_int_equal(block_snapshot_vmstate_map(n, "r", 0, sizeof(ram), &ext, &count, NULL), 0);
    assert_true(count >= 1 && ext[0].kind == BLOCK_EXTENT_DATA && ext[0].len >= 65536);
    int fd = block_node_host_fd(n);
    off_t page2 = (off_t)ext[0].host_offset + 2 * 4096;
    assert_int_equal(lseek(fd, page2, SEEK_HOLE), page2);
    assert_int_equal(lseek(fd, page2, SEEK_DATA), page2 + 4096);
    assert_int_equal(lseek(fd, page2 + 4096, SEEK_HOLE), page2 + 3 * 4096); /* 3, 4: data */
    free(ext);
    block_graph_free(g);
}

static void test_bad_headers(void **state)
{
    (void)state;
    static const struct {
        int off, len;
        uint64_t val;
        const char *msg;
    } cases[] = {
            {0, 4, 0x514649fa, "not a qcow2 image"},
            {4, 4, 5, "unsupported qcow2 version 5"},
            {20, 4, 30, "cluster_bits 30"},
            {40, 8, 3 * 4096 + 1, "L1 table offset"},
            {48, 8, 1ull << 40, "refcount table"},
            {72, 8, 1ull << 9, "unsupported incompatible feature"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        make_image(12, 4, 1 << 20);
        FILE *f = fopen(path, "r+b");
        uint8_t b[8];
        put_be(b, cases[i].val, cases[i].len);
        fseek(f, cases[i].off, SEEK_SET);
        fwrite(b, 1, (size_t)cases[i].len, f);
        fclose(f);
        struct block_graph *g = block_graph_new();
        struct error *err = NULL;
        assert_null(open_image(g, &err));
        assert_non_null(err);
        if (!strstr(err->message, cases[i].msg) || !strstr(err->message, "t.qcow2")) {
            fail_msg("case %zu: '%s' lacks '%s' or the file name", i, err->message, cases[i].msg);
        }
        error_free(err);
        block_graph_free(g);
    }
}

/* ---- threads ---- */

struct worker {
    struct block_node *node;
    unsigned id;
    int failures;
};

#define REGION (64 * 1024)

static void *writer(void *arg)
{
    struct worker *w = arg;
    static __thread uint8_t buf[REGION], back[REGION];
    for (unsigned round = 0; round < 20; round++) {
        fill(buf, sizeof(buf), w->id * 100 + round);
        if (block_pwrite(w->node, (uint64_t)w->id * REGION, buf, sizeof(buf), NULL) < 0 ||
            block_pread(w->node, (uint64_t)w->id * REGION, back, sizeof(back), NULL) < 0 ||
            memcmp(buf, back, sizeof(buf)) != 0) {
            w->failures++;
        }
    }
    return NULL;
}

static void *snapshotter(void *arg)
{
    struct worker *w = arg;
    for (unsigned i = 0; i < 10; i++) {
        struct block_snapshot_info info = {.vm_state_size = 0};
        snprintf(info.name, sizeof(info.name), "t%u", i);
        if (block_snapshot_create(w->node, &info, NULL) < 0 ||
            block_snapshot_delete(w->node, info.name, NULL) < 0) {
            w->failures++;
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    make_image(12, 4, 1 << 20);
    struct block_graph *g = block_graph_new();
    struct block_node *n = open_image(g, NULL);
    struct worker w[5];
    pthread_t t[5];
    for (unsigned i = 0; i < 5; i++) {
        w[i] = (struct worker){.node = n, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, i < 4 ? writer : snapshotter, &w[i]), 0);
    }
    for (unsigned i = 0; i < 5; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    static uint8_t buf[REGION], back[REGION];
    for (unsigned i = 0; i < 4; i++) {
        fill(buf, sizeof(buf), i * 100 + 19);
        assert_int_equal(block_pread(n, (uint64_t)i * REGION, back, sizeof(back), NULL), 0);
        assert_memory_equal(buf, back, sizeof(buf));
    }
    block_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_io_roundtrip),
            cmocka_unit_test(test_refcount_widths),
            cmocka_unit_test(test_snapshot_cow_and_copied_flags),
            cmocka_unit_test(test_vmstate_map),
            cmocka_unit_test(test_vmstate_ram_rewrite_in_place),
            cmocka_unit_test(test_bad_headers),
            cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
