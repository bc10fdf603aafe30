/* Unit tests for PCI configuration space and the virtio-pci common config. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "hw/pci.h"
#include "hw/virtio_pci.h"

static void test_header_and_readonly_fields(void **state)
{
    (void)state;
    struct pci_device pd;
    memset(&pd, 0, sizeof(pd));
    pci_config_init(&pd, 0x1af4, 0x1042, 1, 0x018000, 0x1af4, 2);
    assert_int_equal(pci_config_read(&pd, PCI_VENDOR_ID, 4), 0x10421af4);
    assert_int_equal(pci_config_read(&pd, PCI_REVISION_ID, 4), 0x01800001);
    assert_int_equal(pci_config_read(&pd, PCI_SUBSYSTEM_ID, 2), 2);
    /* Vendor/device ID and class are read-only. */
    pci_config_write(&pd, PCI_VENDOR_ID, 4, 0xdeadbeef);
    pci_config_write(&pd, PCI_REVISION_ID, 4, 0xffffffff);
    assert_int_equal(pci_config_read(&pd, PCI_VENDOR_ID, 4), 0x10421af4);
    assert_int_equal(pci_config_read(&pd, PCI_REVISION_ID, 4), 0x01800001);
    /* Command: only the defined bits stick; interrupt line is writable. */
    pci_config_write(&pd, PCI_COMMAND, 2, 0xffff);
    assert_int_equal(pci_config_read(&pd, PCI_COMMAND, 2), 0x0407);
    pci_config_write(&pd, PCI_INTERRUPT_LINE, 1, 11);
    assert_int_equal(pci_config_read(&pd, PCI_INTERRUPT_LINE, 1), 11);
    /* Out of range reads as all ones. */
    assert_int_equal(pci_config_read(&pd, 255, 4), 0xffffffff);
}

static void test_bar_sizing(void **state)
{
    (void)state;
    struct pci_device pd;
    memset(&pd, 0, sizeof(pd));
    pci_config_init(&pd, 1, 2, 0, 0, 0, 0);
    pci_set_bar(&pd, 0, 0x4000);
    pci_config_write(&pd, PCI_BAR0, 4, 0xffffffff);
    assert_int_equal(pci_config_read(&pd, PCI_BAR0, 4), 0xffffc000); /* size 16 KiB, mem32 */
    pci_config_write(&pd, PCI_BAR0, 4, 0xe0004567);
    assert_int_equal(pci_config_read(&pd, PCI_BAR0, 4), 0xe0004000);
    assert_int_equal(pci_bar_addr(&pd, 0), 0); /* memory decoding still off */
    pci_config_write(&pd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    assert_int_equal(pci_bar_addr(&pd, 0), 0xe0004000);
    /* An unimplemented BAR reads as zero whatever is written. */
    pci_config_write(&pd, PCI_BAR0 + 4, 4, 0xffffffff);
    assert_int_equal(pci_config_read(&pd, PCI_BAR0 + 4, 4), 0);
}

static void test_capability_list(void **state)
{
    (void)state;
    struct pci_device pd;
    memset(&pd, 0, sizeof(pd));
    pci_config_init(&pd, 1, 2, 0, 0, 0, 0);
    uint8_t a[14] = {16, 1}, b[18] = {20, 2};
    uint8_t wa[14] = {0};
    wa[5] = 0xff;
    uint8_t off_a = pci_add_vendor_cap(&pd, a, sizeof(a), wa);
    uint8_t off_b = pci_add_vendor_cap(&pd, b, sizeof(b), NULL);
    assert_true(pci_config_read(&pd, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
    assert_int_equal(pci_config_read(&pd, PCI_CAP_PTR, 1), off_a);
    assert_int_equal(pci_config_read(&pd, off_a, 1), 0x09);
    assert_int_equal(pci_config_read(&pd, off_a + 1, 1), off_b);
    assert_int_equal(pci_config_read(&pd, off_b + 1, 1), 0);
    assert_int_equal(pci_config_read(&pd, off_b + 2, 1), 20);
    assert_int_equal(off_b % 4, 0);
    pci_config_write(&pd, off_a + 7, 1, 0x5a); /* the writable byte */
    pci_config_write(&pd, off_a + 3, 1, 0x5a); /* cfg_type: read-only */
    assert_int_equal(pci_config_read(&pd, off_a + 7, 1), 0x5a);
    assert_int_equal(pci_config_read(&pd, off_a + 3, 1), 1);
}

/* virtio-pci: walk the capabilities as a driver would and negotiate. */
static void noop_notify(struct virtio_pci *vp, unsigned q)
{
    (void)vp;
    (void)q;
}

static void cfg_read(struct virtio_pci *vp, uint64_t off, uint8_t *data, uint32_t len)
{
    (void)vp;
    for (uint32_t i = 0; i < len; i++) {
        data[i] = (uint8_t)(off + i);
    }
}

static const struct virtio_ops ops = {noop_notify, cfg_read, NULL};

static uint32_t bar_read(struct virtio_pci *vp, uint64_t off, uint32_t len)
{
    uint8_t d[8] = {0};
    virtio_pci_bar_io(&vp->pci, 0, off, d, len, false);
    return (uint32_t)le_load(d, len);
}

static void bar_write(struct virtio_pci *vp, uint64_t off, uint32_t len, uint64_t v)
{
    uint8_t d[8];
    le_store(d, len, v);
    virtio_pci_bar_io(&vp->pci, 0, off, d, len, true);
}

static uint32_t find_cap(struct virtio_pci *vp, uint8_t type)
{
    for (uint8_t p = (uint8_t)pci_config_read(&vp->pci, PCI_CAP_PTR, 1); p;
         p = (uint8_t)pci_config_read(&vp->pci, p + 1, 1)) {
        if (pci_config_read(&vp->pci, p + 3, 1) == type) {
            return pci_config_read(&vp->pci, p + 8, 4); /* offset in the BAR */
        }
    }
    fail_msg("capability %u missing", type);
    return 0;
}

static void test_virtio_negotiation(void **state)
{
    (void)state;
    struct virtio_pci vp;
    memset(&vp, 0, sizeof(vp));
    virtio_pci_init(&vp, &ops, 2, 0x018000, 1ULL << 9, 1, 256, 24);
    assert_int_equal(pci_config_read(&vp.pci, PCI_DEVICE_ID, 2), 0x1042);
    uint32_t common = find_cap(&vp, 1);
    uint32_t device = find_cap(&vp, 4);
    find_cap(&vp, 2);
    find_cap(&vp, 3);
    find_cap(&vp, 5);
    bar_write(&vp, common + 0x00, 4, 1);
    assert_int_equal(bar_read(&vp, common + 0x04, 4), 1); /* VERSION_1 is bit 32 */
    bar_write(&vp, common + 0x00, 4, 0);
    assert_int_equal(bar_read(&vp, common + 0x04, 4), 1u << 9);
    assert_int_equal(bar_read(&vp, common + 0x12, 2), 1); /* num_queues */

    /* Features without VERSION_1: FEATURES_OK does not stick. */
    bar_write(&vp, common + 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    bar_write(&vp, common + 0x08, 4, 0);
    bar_write(&vp, common + 0x0c, 4, 1u << 9);
    bar_write(&vp, common + 0x14, 1, 0x0b);
    assert_int_equal(bar_read(&vp, common + 0x14, 1) & VIRTIO_STATUS_FEATURES_OK, 0);
    /* An unoffered feature: refused too. */
    bar_write(&vp, common + 0x08, 4, 1);
    bar_write(&vp, common + 0x0c, 4, 1 | 2);
    bar_write(&vp, common + 0x14, 1, 0x0b);
    assert_int_equal(bar_read(&vp, common + 0x14, 1) & VIRTIO_STATUS_FEATURES_OK, 0);
    bar_write(&vp, common + 0x0c, 4, 1);
    bar_write(&vp, common + 0x14, 1, 0x0b);
    assert_int_equal(bar_read(&vp, common + 0x14, 1), 0x0b);
    assert_int_equal(vp.driver_features, (1ULL << 32) | (1ULL << 9));

    /* Queue set-up: size must be a power of two; 64-bit addresses in halves. */
    bar_write(&vp, common + 0x16, 2, 0);
    assert_int_equal(bar_read(&vp, common + 0x18, 2), 256);
    bar_write(&vp, common + 0x18, 2, 100);
    assert_int_equal(bar_read(&vp, common + 0x18, 2), 256);
    bar_write(&vp, common + 0x18, 2, 64);
    bar_write(&vp, common + 0x20, 8, 0x123456789000ULL);
    bar_write(&vp, common + 0x28, 4, 0x2000);
    bar_write(&vp, common + 0x2c, 4, 0x1);
    assert_int_equal(vp.vq[0].size, 64);
    assert_int_equal(vp.vq[0].desc, 0x123456789000ULL);
    assert_int_equal(vp.vq[0].avail, 0x100002000ULL);
    bar_write(&vp, common + 0x1c, 2, 1);
    bar_write(&vp, common + 0x18, 2, 32); /* ignored once enabled */
    assert_int_equal(bar_read(&vp, common + 0x18, 2), 64);
    assert_int_equal(bar_read(&vp, common + 0x1a, 2), 0xffff); /* no MSI-X */
    /* A queue that does not exist reads as size 0. */
    bar_write(&vp, common + 0x16, 2, 5);
    assert_int_equal(bar_read(&vp, common + 0x18, 2), 0);

    assert_int_equal(bar_read(&vp, device + 3, 1), 3);

    /* Writing 0 to status resets everything. */
    bar_write(&vp, common + 0x14, 1, 0);
    assert_int_equal(bar_read(&vp, common + 0x14, 1), 0);
    assert_false(vp.vq[0].enabled);
    assert_int_equal(vp.driver_features, 0);
}

static void test_virtio_pci_cfg_window(void **state)
{
    (void)state;
    struct virtio_pci vp;
    memset(&vp, 0, sizeof(vp));
    virtio_pci_init(&vp, &ops, 2, 0x018000, 0, 1, 256, 24);
    unsigned cap = vp.cfg_cap;
    /* Read num_queues (common config offset 0x12, 2 bytes) through the window. */
    pci_config_write(&vp.pci, cap + 4, 1, 0);
    pci_config_write(&vp.pci, cap + 8, 4, 0x12);
    pci_config_write(&vp.pci, cap + 12, 4, 2);
    assert_int_equal(pci_config_read(&vp.pci, cap + 16, 2), 1);
    /* And write device_status through it. */
    pci_config_write(&vp.pci, cap + 8, 4, 0x14);
    pci_config_write(&vp.pci, cap + 12, 4, 1);
    pci_config_write(&vp.pci, cap + 16, 1, VIRTIO_STATUS_ACKNOWLEDGE);
    assert_int_equal(vp.status, VIRTIO_STATUS_ACKNOWLEDGE);
}

static void test_virtio_state_roundtrip(void **state)
{
    (void)state;
    struct virtio_pci a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    virtio_pci_init(&a, &ops, 2, 0x018000, 0, 1, 256, 24);
    virtio_pci_init(&b, &ops, 2, 0x018000, 0, 1, 256, 24);
    a.status = 0x0f;
    a.vq[0] = (struct virtq){.size = 8,
                             .enabled = true,
                             .desc = 0x1000,
                             .avail = 0x2000,
                             .used = 0x3000,
                             .last_avail = 7,
                             .used_idx = 6};
    struct byte_buf buf;
    buf_init(&buf);
    virtio_pci_save(&a, &buf);
    struct byte_reader r;
    reader_init(&r, buf.data, buf.len);
    assert_int_equal(virtio_pci_load(&b, &r, NULL), 0);
    assert_int_equal(reader_finish(&r, "t", NULL), 0);
    assert_int_equal(b.status, 0x0f);
    assert_memory_equal(&b.vq[0], &a.vq[0], sizeof(a.vq[0]));
    /* Truncated: refused, nothing changed. */
    struct virtio_pci c;
    memset(&c, 0, sizeof(c));
    virtio_pci_init(&c, &ops, 2, 0x018000, 0, 1, 256, 24);
    struct error *err = NULL;
    reader_init(&r, buf.data, buf.len - 3);
    assert_int_equal(virtio_pci_load(&c, &r, &err), -1);
    assert_non_null(strstr(err->message, "truncated"));
    assert_int_equal(c.status, 0);
    error_free(err);
    buf_free(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_header_and_readonly_fields),
            cmocka_unit_test(test_bar_sizing),
            cmocka_unit_test(test_capability_list),
            cmocka_unit_test(test_virtio_negotiation),
            cmocka_unit_test(test_virtio_pci_cfg_window),
            cmocka_unit_test(test_virtio_state_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
