/* Unit tests for split virtqueues (src/hw/virtio_ring.c) over a fake guest RAM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hw/device.h"
#include "hw/virtio_ring.h"

#define RAM_SIZE (1 << 20)
#define DESC     0x1000
#define AVAIL    0x2000
#define USED     0x3000
#define QSZ      8

struct fixture {
    struct guest_ram ram;
    struct virtq q;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->ram.host = calloc(1, RAM_SIZE);
    f->ram.size = RAM_SIZE;
    f->ram.low_size = RAM_SIZE;
    f->q = (struct virtq){.size = QSZ, .enabled = true, .desc = DESC, .avail = AVAIL, .used = USED};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    free(f->ram.host);
    free(f);
    return 0;
}

static void set_desc(struct fixture *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    uint8_t *d = f->ram.host + DESC + 16 * i;
    le_store(d, 8, addr);
    le_store(d + 8, 4, len);
    le_store(d + 12, 2, flags);
    le_store(d + 14, 2, next);
}

static void offer(struct fixture *f, uint16_t head)
{
    uint8_t *a = f->ram.host + AVAIL;
    uint16_t idx = (uint16_t)le_load(a + 2, 2);
    le_store(a + 4 + 2 * (idx % QSZ), 2, head);
    le_store(a + 2, 2, (uint16_t)(idx + 1));
}

static void test_pop_chain_and_push(void **state)
{
    struct fixture *f = *state;
    struct virtq_elem e;
    assert_int_equal(virtq_pop(&f->q, &f->ram, &e, NULL), 0); /* empty */
    set_desc(f, 3, 0x8000, 16, VIRTQ_DESC_F_NEXT, 5);
    set_desc(f, 5, 0x9000, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    set_desc(f, 1, 0xa000, 1, VIRTQ_DESC_F_WRITE, 0);
    offer(f, 3);
    assert_int_equal(virtq_pop(&f->q, &f->ram, &e, NULL), 1);
    assert_int_equal(e.head, 3);
    assert_int_equal(e.nseg, 3);
    assert_ptr_equal(e.seg[0].ptr, f->ram.host + 0x8000);
    assert_false(e.seg[0].write);
    assert_int_equal(e.seg[1].len, 512);
    assert_true(e.seg[2].write);
    assert_int_equal(virtq_pop(&f->q, &f->ram, &e, NULL), 0);
    assert_int_equal(virtq_push(&f->q, &f->ram, 3, 513, NULL), 0);
    uint8_t *u = f->ram.host + USED;
    assert_int_equal(le_load(u + 2, 2), 1);
    assert_int_equal(le_load(u + 4, 4), 3);
    assert_int_equal(le_load(u + 8, 4), 513);
    assert_true(virtq_should_notify(&f->q, &f->ram));
    le_store(f->ram.host + AVAIL, 2, VIRTQ_AVAIL_F_NO_INTERRUPT);
    assert_false(virtq_should_notify(&f->q, &f->ram));
}

static void test_index_wraps(void **state)
{
    struct fixture *f = *state;
    struct virtq_elem e;
    set_desc(f, 0, 0x8000, 4, 0, 0);
    f->q.last_avail = 0xfffe;
    f->q.used_idx = 0xfffe;
    le_store(f->ram.host + AVAIL + 2, 2, 0xfffe);
    for (int i = 0; i < 4; i++) {
        offer(f, 0);
        assert_int_equal(virtq_pop(&f->q, &f->ram, &e, NULL), 1);
        assert_int_equal(virtq_push(&f->q, &f->ram, 0, 0, NULL), 0);
    }
    assert_int_equal(f->q.last_avail, 2);
    assert_int_equal(le_load(f->ram.host + USED + 2, 2), 2);
}

static void expect_broken(struct fixture *f, const char *needle)
{
    struct virtq_elem e;
    struct error *err = NULL;
    assert_int_equal(virtq_pop(&f->q, &f->ram, &e, &err), -1);
    assert_non_null(err);
    if (!strstr(err->message, needle)) {
        fail_msg("'%s' lacks '%s'", err->message, needle);
    }
    error_free(err);
}

static void test_malformed_chains(void **state)
{
    struct fixture *f = *state;
    /* A loop. */
    set_desc(f, 0, 0x8000, 4, VIRTQ_DESC_F_NEXT, 1);
    set_desc(f, 1, 0x8000, 4, VIRTQ_DESC_F_NEXT, 0);
    offer(f, 0);
    expect_broken(f, "loops");
    /* A buffer outside RAM. */
    f->q.last_avail = 0;
    set_desc(f, 0, RAM_SIZE - 2, 4, 0, 0);
    expect_broken(f, "outside guest RAM");
    /* next out of range. */
    set_desc(f, 0, 0x8000, 4, VIRTQ_DESC_F_NEXT, QSZ);
    expect_broken(f, "out of range");
    /* Readable after writable. */
    set_desc(f, 0, 0x8000, 4, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    set_desc(f, 1, 0x8000, 4, 0, 0);
    expect_broken(f, "after a writable");
    /* Indirect, not offered. */
    set_desc(f, 0, 0x8000, 16, VIRTQ_DESC_F_INDIRECT, 0);
    expect_broken(f, "indirect");
    /* Head out of range. */
    le_store(f->ram.host + AVAIL + 4, 2, 99);
    expect_broken(f, "descriptor index 99");
    /* The driver claims more entries than the ring holds. */
    le_store(f->ram.host + AVAIL + 2, 2, QSZ + 5);
    expect_broken(f, "ahead");
    /* Rings outside RAM or misaligned. */
    f->q.used = RAM_SIZE - 8;
    expect_broken(f, "outside guest RAM");
    f->q.used = USED;
    f->q.desc = DESC + 8;
    expect_broken(f, "misaligned");
}

static void test_high_ram_translation(void **state)
{
    (void)state;
    uint8_t host[0x3000];
    struct guest_ram r = {.host = host, .size = sizeof(host), .low_size = 0x1000};
    assert_ptr_equal(guest_ram_ptr(&r, 0x800, 0x800), host + 0x800);
    assert_null(guest_ram_ptr(&r, 0x800, 0x801)); /* crosses the end of low RAM */
    assert_ptr_equal(guest_ram_ptr(&r, GUEST_HIGH_RAM_BASE, 0x2000), host + 0x1000);
    assert_null(guest_ram_ptr(&r, GUEST_HIGH_RAM_BASE + 0x1000, 0x1001));
    assert_null(guest_ram_ptr(&r, 0x2000, 1)); /* the hole below 4 GiB */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_pop_chain_and_push, setup, teardown),
            cmocka_unit_test_setup_teardown(test_index_wraps, setup, teardown),
            cmocka_unit_test_setup_teardown(test_malformed_chains, setup, teardown),
            cmocka_unit_test(test_high_ram_translation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
