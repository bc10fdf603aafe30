/* Unit tests for the vmstate header and device-record format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "snapshot/describe.h"
#include "snapshot/pack.h"
#include "snapshot/vmstate.h"

static struct vmstate_header sample_header(void)
{
    struct vmstate_header h = {
            .page_size = VMSTATE_PAGE_SIZE,
            .ram_size = 128ULL << 20,
            .vcpu_count = 2,
            .vm_clock_ns = 123456789,
            .ram_offset = VMSTATE_RAM_OFFSET,
            .devices_size = 10000,
            .devices_crc = 0xdeadbeef,
            .ram_pages_written = 77,
    };
    h.devices_offset = vmstate_devices_offset(h.ram_size);
    return h;
}

static void expect_decode_error(const uint8_t *buf, size_t len, uint64_t vm_state_size,
                                const char *needle)
{
    struct vmstate_header out;
    struct error *err = NULL;
    assert_int_equal(vmstate_header_decode(buf, len, vm_state_size, &out, "snapshot 'a'", &err),
                     -1);
    assert_non_null(err);
    if (!strstr(err->message, needle) || !strstr(err->message, "snapshot 'a'")) {
        fail_msg("message '%s' lacks '%s'", err->message, needle);
    }
    error_free(err);
}

static void test_header_roundtrip(void **state)
{
    (void)state;
    struct vmstate_header h = sample_header();
    uint8_t buf[VMSTATE_HEADER_SIZE];
    vmstate_header_encode(&h, buf);
    struct vmstate_header out;
    assert_int_equal(
            vmstate_header_decode(buf, sizeof(buf), vmstate_total_size(&h), &out, "x", NULL), 0);
    assert_int_equal(out.ram_size, h.ram_size);
    assert_int_equal(out.vcpu_count, 2);
    assert_int_equal(out.vm_clock_ns, h.vm_clock_ns);
    assert_int_equal(out.devices_crc, 0xdeadbeef);
    assert_int_equal(out.ram_offset, 2u << 20);
    assert_int_equal(out.ram_pages_written, 77);
}

static void test_layout(void **state)
{
    (void)state;
    struct vmstate_header h = sample_header();
    assert_int_equal(VMSTATE_RAM_OFFSET % (2u << 20), 0); /* every cluster size divides it */
    assert_int_equal(h.devices_offset, VMSTATE_RAM_OFFSET + (128ULL << 20));
    assert_int_equal(vmstate_total_size(&h), h.devices_offset + 10000);
}

static void test_rejects_foreign_and_corrupt(void **state)
{
    (void)state;
    struct vmstate_header h = sample_header();
    uint8_t buf[VMSTATE_HEADER_SIZE];
    uint64_t size = vmstate_total_size(&h);

    uint8_t qemu[VMSTATE_HEADER_SIZE] = {'Q', 'E', 'V', 'M', 0, 0, 0, 3};
    expect_decode_error(qemu, sizeof(qemu), size, "written by QEMU");

    uint8_t zeros[VMSTATE_HEADER_SIZE] = {0};
    expect_decode_error(zeros, sizeof(zeros), size, "not written by snapvm");

    vmstate_header_encode(&h, buf);
    expect_decode_error(buf, 10, size, "not written by snapvm");
    buf[30] ^= 1;
    expect_decode_error(buf, sizeof(buf), size, "checksum mismatch");

    vmstate_header_encode(&h, buf);
    buf[8] = 9;
    expect_decode_error(buf, sizeof(buf), size, "version 9");

    vmstate_header_encode(&h, buf);
    expect_decode_error(buf, sizeof(buf), size - 4096, "truncated");

    h.ram_offset += 4096;
    vmstate_header_encode(&h, buf);
    expect_decode_error(buf, sizeof(buf), size + 4096, "RAM section");

    h = sample_header();
    h.devices_offset -= 4096;
    vmstate_header_encode(&h, buf);
    expect_decode_error(buf, sizeof(buf), size, "device section");
}

static void test_records_roundtrip(void **state)
{
    (void)state;
    struct byte_buf b;
    buf_init(&b);
    vmstate_record_add(&b, "cpu/0", 1, "abcd", 4);
    vmstate_record_add(&b, "serial0", 2, "", 0);
    vmstate_record_add(&b, "virtio-blk/disk0", 3, "xyz", 3);
    struct vmstate_record *recs = NULL;
    size_t n = 0;
    assert_int_equal(vmstate_records_parse(b.data, b.len, &recs, &n, "x", NULL), 0);
    assert_int_equal(n, 3);
    const struct vmstate_record *r = vmstate_record_find(recs, n, "virtio-blk/disk0");
    assert_non_null(r);
    assert_int_equal(r->version, 3);
    assert_int_equal(r->len, 3);
    assert_memory_equal(r->data, "xyz", 3);
    assert_null(vmstate_record_find(recs, n, "cpu/1"));
    free(recs);
    buf_free(&b);
}

static void expect_records_error(struct byte_buf *b, const char *needle)
{
    struct vmstate_record *recs = NULL;
    size_t n = 0;
    struct error *err = NULL;
    assert_int_equal(vmstate_records_parse(b->data, b->len, &recs, &n, "snap", &err), -1);
    if (!strstr(err->message, needle)) {
        fail_msg("message '%s' lacks '%s'", err->message, needle);
    }
    error_free(err);
}

static void test_records_reject_malformed(void **state)
{
    (void)state;
    struct byte_buf b;
    buf_init(&b);
    vmstate_record_add(&b, "cpu/0", 1, "abcd", 4);
    vmstate_record_add(&b, "cpu/0", 1, "abcd", 4);
    expect_records_error(&b, "two records for 'cpu/0'");

    buf_reset(&b);
    vmstate_record_add(&b, "cpu/0", 1, "abcd", 4);
    b.len -= 1; /* truncate the payload */
    expect_records_error(&b, "'cpu/0' is truncated");

    buf_reset(&b);
    vmstate_record_add(&b, "bad id", 1, "", 0);
    expect_records_error(&b, "invalid id");

    buf_reset(&b);
    buf_put_u16(&b, 200); /* id longer than the section */
    expect_records_error(&b, "invalid id");
    buf_free(&b);
}

/* Version 2: the description section right after the device section, under the header CRC. */
static void test_v2_description_section(void **state)
{
    (void)state;
    struct vmstate_header h = sample_header();
    h.desc_offset = vmstate_desc_offset(&h);
    h.desc_size = 700;
    h.desc_crc = 0x12345678;
    assert_int_equal(h.desc_offset, h.devices_offset + h.devices_size);
    assert_int_equal(vmstate_total_size(&h), h.desc_offset + 700);
    uint8_t buf[VMSTATE_HEADER_SIZE];
    vmstate_header_encode(&h, buf);
    assert_int_equal(buf[8], 2); /* nothing packed: version 2, which older snapvms read */
    struct vmstate_header out;
    assert_int_equal(
            vmstate_header_decode(buf, sizeof(buf), vmstate_total_size(&h), &out, "x", NULL), 0);
    assert_int_equal(out.version, 2);
    assert_int_equal(out.desc_offset, h.desc_offset);
    assert_int_equal(out.desc_size, 700);
    assert_int_equal(out.desc_crc, 0x12345678);
    /* The section is covered by vm_state_size... */
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&h) - 1, "truncated");
    /* ...must follow the device section... */
    h.desc_offset += 8;
    vmstate_header_encode(&h, buf);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&h), "description section");
    /* ...and be of a sane size. */
    h = sample_header();
    h.desc_offset = vmstate_desc_offset(&h);
    h.desc_size = VMSTATE_MAX_DESC_SIZE + 1;
    vmstate_header_encode(&h, buf);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&h), "description section");
    /* A flipped bit in the description fields is caught by the header CRC. */
    h.desc_size = 700;
    vmstate_header_encode(&h, buf);
    buf[97] ^= 1;
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&h), "checksum mismatch");
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* A version-1 vmstate (no description; header CRC at byte 88) still decodes. */
static void test_v1_header_still_read(void **state)
{
    (void)state;
    struct vmstate_header h = sample_header();
    uint8_t buf[VMSTATE_HEADER_SIZE];
    vmstate_header_encode(&h, buf);
    memset(buf + 88, 0, 32);
    put32(buf + 8, 1);
    put32(buf + 88, vmstate_crc32(buf, 88));
    struct vmstate_header out;
    assert_int_equal(
            vmstate_header_decode(buf, sizeof(buf), vmstate_total_size(&h), &out, "x", NULL), 0);
    assert_int_equal(out.version, 1);
    assert_int_equal(out.desc_size, 0);
    assert_int_equal(out.ram_pages_written, 77);
    assert_int_equal(vmstate_total_size(&out), h.devices_offset + h.devices_size);
    /* A corrupt version-1 header is still refused. */
    buf[30] ^= 1;
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&h), "checksum mismatch");
    /* A version from a newer snapvm is refused, saying so. */
    vmstate_header_encode(&h, buf);
    put32(buf + 8, VMSTATE_VERSION + 1);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&h), "newer snapvm");
}

/* Version 3: the pack area and its map at their fixed places, under the header CRC (at 152). */
static void test_v3_pack_map(void **state)
{
    (void)state;
    struct vmstate_header h = sample_header();
    h.desc_offset = vmstate_desc_offset(&h);
    h.desc_size = 700;
    h.pack_offset = vmstate_pack_offset(h.ram_size);
    h.pack_unit = 16;
    h.pack_pages = 4096;
    h.map_offset = h.pack_offset + h.pack_pages * VMSTATE_PAGE_SIZE;
    h.map_size = 300 * vmstate_map_entry_size(16); /* 300 packed clusters */
    h.map_crc = 0xcafef00d;
    assert_true(h.pack_offset >=
                h.devices_offset + VMSTATE_MAX_DEVICES_SIZE + VMSTATE_MAX_DESC_SIZE);
    assert_int_equal(h.pack_offset % VMSTATE_RAM_ALIGN, 0);
    /* An entry: cluster, first slot, one word of page bits (up to 64 pages; 512: 8 words). */
    assert_int_equal(vmstate_map_entry_size(16), 16);
    assert_int_equal(vmstate_map_entry_size(512), 8 + 64);
    assert_int_equal(vmstate_total_size(&h), h.map_offset + h.map_size);
    uint8_t buf[VMSTATE_HEADER_SIZE];
    vmstate_header_encode(&h, buf);
    assert_int_equal(buf[8], 3);
    struct vmstate_header out;
    assert_int_equal(
            vmstate_header_decode(buf, sizeof(buf), vmstate_total_size(&h), &out, "x", NULL), 0);
    assert_int_equal(out.version, 3);
    assert_int_equal(out.pack_offset, h.pack_offset);
    assert_int_equal(out.pack_pages, 4096);
    assert_int_equal(out.pack_unit, 16);
    assert_int_equal(out.map_crc, 0xcafef00d);
    assert_int_equal(out.map_size, h.map_size);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&h) - 1, "truncated");
    /* Each field out of place is refused, naming the pack area. */
    struct vmstate_header bad = h;
    bad.pack_unit = 12;
    vmstate_header_encode(&bad, buf);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&bad), "pack area");
    bad = h;
    bad.pack_offset += VMSTATE_RAM_ALIGN;
    bad.map_offset += VMSTATE_RAM_ALIGN;
    vmstate_header_encode(&bad, buf);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&bad), "pack area");
    bad = h;
    bad.pack_pages = 4095;
    bad.map_offset -= VMSTATE_PAGE_SIZE;
    vmstate_header_encode(&bad, buf);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&bad), "pack area");
    bad = h;
    bad.map_offset += VMSTATE_PAGE_SIZE;
    vmstate_header_encode(&bad, buf);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&bad), "pack area");
    bad = h;
    bad.map_size -= 8; /* not whole entries */
    vmstate_header_encode(&bad, buf);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&bad), "pack area");
    bad = h;
    bad.map_size = 2049 * vmstate_map_entry_size(16); /* more entries than 2048 clusters */
    vmstate_header_encode(&bad, buf);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&bad), "pack area");
    bad = h;
    bad.pack_pages = 2 * 32768 + 32; /* more slots than a save can fill */
    bad.map_offset = bad.pack_offset + bad.pack_pages * VMSTATE_PAGE_SIZE;
    vmstate_header_encode(&bad, buf);
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&bad), "pack area");
    /* A flipped bit in the pack fields is caught by the header CRC. */
    vmstate_header_encode(&h, buf);
    buf[121] ^= 1;
    expect_decode_error(buf, sizeof(buf), vmstate_total_size(&h), "checksum mismatch");
}

/* A map built as a save builds it, through its encoding and back; then each kind of damage. */
static void test_pack_map_roundtrip(void **state)
{
    (void)state;
    uint64_t ram_size = 1 << 20; /* 256 pages, 16 clusters of 16 */
    struct ram_packs *p = ram_packs_new(ram_size, 16);
    /* Cluster 3: pages 48, 50 and 63 in slots 0-2; cluster 9: page 150 in slot 16. */
    p->index[3] = 1;
    p->present[0] = 1ull << 48 | 1ull << 50 | 1ull << 63;
    p->index[9] = 17;
    p->present[2] = 1ull << (150 - 128);
    p->packed = 2;
    p->slots = 32;
    uint64_t len;
    uint8_t *map = ram_packs_encode(p, &len);
    assert_int_equal(len, 2 * 16); /* an entry per packed cluster */
    struct vmstate_header h = sample_header();
    h.ram_size = ram_size;
    h.devices_offset = vmstate_devices_offset(ram_size);
    ram_packs_header(p, &h, map, len);
    assert_int_equal(h.map_size, len);
    assert_int_equal(h.map_offset, h.pack_offset + 32 * VMSTATE_PAGE_SIZE);
    struct ram_packs *q = NULL;
    assert_int_equal(ram_packs_decode(map, &h, "x", &q, NULL), 0);
    uint64_t slot;
    assert_int_equal(q->packed, 2);
    assert_true(ram_packs_cluster(q, 3, &slot) && slot == 0);
    assert_true(ram_packs_cluster(q, 9, &slot) && slot == 16);
    assert_false(ram_packs_cluster(q, 4, &slot));
    assert_memory_equal(q->present, p->present, 4 * sizeof(uint64_t));
    /* Unpacking a cluster drops its pages' slots. */
    ram_packs_unpack(q, 3);
    assert_false(ram_packs_cluster(q, 3, &slot));
    assert_int_equal(q->present[0], 0);
    assert_int_equal(q->packed, 1);
    ram_packs_free(q);

    struct error *err = NULL;
    uint8_t good[32];
    memcpy(good, map, sizeof(good));
    /* Each damage, sealed with a right CRC but the first: the error names it. */
    struct {
        size_t at;
        uint8_t value;
        const char *error;
    } cases[] = {
            {0, 0x02, "checksum mismatch"},
            {16 + 4, 32, "cluster 9 (guest RAM 0x90000) at slots 32+1, past the pack area"},
            {16, 3, "entry 1 names cluster 3, out of order"},
            {16, 16, "entry 1 names cluster 16, past the end of RAM"},
            {8 + 2, 0x01, "cluster 3 pages past its end"}, /* bit 16 of a 16-page cluster */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memcpy(map, good, sizeof(good));
        map[cases[i].at] = cases[i].value;
        h.map_crc = i == 0 ? h.map_crc : vmstate_crc32(map, len);
        assert_int_equal(ram_packs_decode(map, &h, "x", &q, &err), -1);
        if (!strstr(err->message, cases[i].error)) {
            fail_msg("case %zu: '%s' lacks '%s'", i, err->message, cases[i].error);
        }
        error_free(err);
        err = NULL;
    }
    /* A map of a RAM size that ends inside a cluster: no bits past its end. */
    struct ram_packs *r = ram_packs_new(ram_size - 3 * VMSTATE_PAGE_SIZE, 16);
    r->index[15] = 1;
    r->present[3] = 1ull << 60; /* page 252, the last cluster's 13th of 13 */
    r->packed = 1;
    r->slots = 16;
    free(map);
    map = ram_packs_encode(r, &len);
    h.ram_size = ram_size - 3 * VMSTATE_PAGE_SIZE;
    ram_packs_header(r, &h, map, len);
    assert_int_equal(ram_packs_decode(map, &h, "x", &q, NULL), 0);
    ram_packs_free(q);
    map[8 + 1] |= 0x20; /* page 13 of the cluster: page 253, past RAM */
    h.map_crc = vmstate_crc32(map, len);
    assert_int_equal(ram_packs_decode(map, &h, "x", &q, &err), -1);
    assert_non_null(strstr(err->message, "past the end of RAM"));
    error_free(err);
    ram_packs_free(r);
    free(map);
    ram_packs_free(p);
}

#define GOOD_UUID "0123456789abcdef0123456789abcdef"
#define GOOD_MACHINE                                                                               \
    "\"machine\": {\"ram-size\": 67108864, \"vcpus\": 1, \"devices\": [{\"id\": \"serial0\", "     \
    "\"type\": \"serial\"}, {\"id\": \"vb\", \"type\": \"virtio-blk-pci\", \"drive\": \"root\"}]}"

static const char good_record[] =
        "{\"format\": 1, \"uuid\": \"" GOOD_UUID "\", \"tag\": \"a\", \"ancestors\": [\"" GOOD_UUID
        "\"], \"vmstate\": \"root\", \"nodes\": [{\"node-name\": \"root\"}, {\"node-name\": "
        "\"data\"}], \"excluded\": [{\"node-name\": \"vars\"}], " GOOD_MACHINE "}";

static void test_description_parse(void **state)
{
    (void)state;
    struct description *d = NULL;
    assert_int_equal(describe_parse(good_record, strlen(good_record), &d, "x", NULL), 0);
    assert_string_equal(describe_uuid(d), GOOD_UUID);
    assert_string_equal(describe_vmstate(d), "root");
    json_t *nodes = describe_node_names(d), *excluded = describe_excluded_names(d);
    assert_int_equal(json_array_size(nodes), 2);
    assert_string_equal(json_string_value(json_array_get(nodes, 1)), "data");
    assert_string_equal(json_string_value(json_array_get(excluded, 0)), "vars");
    assert_int_equal(json_array_size(describe_ancestors(d)), 1);
    assert_int_equal(json_integer_value(json_object_get(describe_machine(d), "vcpus")), 1);
    json_decref(nodes);
    json_decref(excluded);
    describe_free(d);
}

static void expect_parse_error(const char *text, const char *needle)
{
    struct description *d = (struct description *)1;
    struct error *err = NULL;
    assert_int_equal(describe_parse(text, strlen(text), &d, "snapshot 'a'", &err), -1);
    assert_null(d);
    if (!strstr(err->message, needle) || !strstr(err->message, "snapshot 'a'")) {
        fail_msg("message '%s' lacks '%s'", err->message, needle);
    }
    error_free(err);
}

static void test_description_rejects_malformed(void **state)
{
    (void)state;
    expect_parse_error("", "malformed");
    expect_parse_error("[1, 2]", "not a JSON object");
    expect_parse_error("{\"uuid\": \"XYZ\"}", "'uuid'");
    expect_parse_error("{\"uuid\": \"" GOOD_UUID "\", \"tag\": \"a\", \"vmstate\": \"r\", "
                       "\"nodes\": [], \"excluded\": [], \"ancestors\": []}",
                       "'nodes'");
    expect_parse_error("{\"uuid\": \"" GOOD_UUID "\", \"tag\": \"a\", \"vmstate\": \"r\", "
                       "\"nodes\": [{\"node-name\": 7}], \"excluded\": [], \"ancestors\": []}",
                       "'nodes'");
    expect_parse_error("{\"uuid\": \"" GOOD_UUID "\", \"tag\": \"a\", \"vmstate\": \"r\", "
                       "\"nodes\": [{\"node-name\": \"r\"}], \"excluded\": [], "
                       "\"ancestors\": [\"nope\"], " GOOD_MACHINE "}",
                       "'ancestors'");
    expect_parse_error("{\"uuid\": \"" GOOD_UUID "\", \"tag\": \"a\", \"vmstate\": \"r\", "
                       "\"nodes\": [{\"node-name\": \"r\"}], \"excluded\": [], "
                       "\"ancestors\": [], \"machine\": {\"vcpus\": 1}}",
                       "'machine'");
    expect_parse_error("{\"uuid\": \"" GOOD_UUID "\", \"tag\": \"a\", \"vmstate\": \"r\", "
                       "\"nodes\": [{\"node-name\": \"r\"}, {\"node-name\": \"r\"}], "
                       "\"excluded\": [], \"ancestors\": [], " GOOD_MACHINE "}",
                       "'nodes'");
    /* Duplicate keys are refused rather than resolved one way or the other. */
    expect_parse_error("{\"uuid\": \"" GOOD_UUID "\", \"uuid\": \"" GOOD_UUID "\"}", "malformed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_header_roundtrip),
            cmocka_unit_test(test_layout),
            cmocka_unit_test(test_rejects_foreign_and_corrupt),
            cmocka_unit_test(test_records_roundtrip),
            cmocka_unit_test(test_records_reject_malformed),
            cmocka_unit_test(test_v2_description_section),
            cmocka_unit_test(test_v1_header_still_read),
            cmocka_unit_test(test_v3_pack_map),
            cmocka_unit_test(test_pack_map_roundtrip),
            cmocka_unit_test(test_description_parse),
            cmocka_unit_test(test_description_rejects_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
