/*
 * libFuzzer target for what a guest driver controls in virtio: the split
 * virtqueue (descriptor table, available ring, queue geometry) and the
 * virtio-pci register interface and saved transport state.  The input is
 * split into: queue geometry, a sequence of register accesses, a transport
 * state record, and the bytes of a small guest RAM holding the rings.
 * Every chain virtq_pop() accepts must lie inside guest RAM (ASan checks
 * the copies below), and a broken chain must be reported, never followed.
 * Build: see fuzz/meson.build.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hw/virtio_pci.h"
#include "hw/virtio_ring.h"

#define RAM_SIZE 65536

static void notify(struct virtio_pci *vp, unsigned q)
{
    (void)vp;
    (void)q;
}

static void config_read(struct virtio_pci *vp, uint64_t off, uint8_t *data, uint32_t len)
{
    (void)vp;
    memset(data, (int)off, len);
}

static const struct virtio_ops ops = {notify, config_read, NULL};

static void fuzz_queue(const uint8_t *data, size_t size)
{
    static uint8_t ram_bytes[RAM_SIZE];
    if (size < 16) {
        return;
    }
    struct virtq q = {
            .size = (uint16_t)(1u << (data[0] % 9)),
            .enabled = true,
            .desc = le_load(data + 1, 2) & 0xfff0,
            .avail = le_load(data + 3, 2) & 0xfffe,
            .used = le_load(data + 5, 2) & 0xfffc,
            .last_avail = (uint16_t)le_load(data + 7, 2),
            .used_idx = (uint16_t)le_load(data + 9, 2),
    };
    memset(ram_bytes, 0, sizeof(ram_bytes));
    memcpy(ram_bytes, data + 16, size - 16 < RAM_SIZE ? size - 16 : RAM_SIZE);
    struct guest_ram ram = {.host = ram_bytes, .size = RAM_SIZE, .low_size = RAM_SIZE};
    static struct virtq_elem e;
    for (int i = 0; i < 64; i++) {
        struct error *err = NULL;
        int rc = virtq_pop(&q, &ram, &e, &err);
        if (rc <= 0) {
            error_free(err);
            break;
        }
        uint32_t total = 0;
        for (unsigned s = 0; s < e.nseg; s++) {
            /* Touch every byte: ASan fails if a segment escapes guest RAM. */
            volatile uint8_t sink = 0;
            for (uint32_t b = 0; b < e.seg[s].len; b++) {
                sink ^= e.seg[s].ptr[b];
            }
            (void)sink;
            total += e.seg[s].len;
        }
        if (virtq_push(&q, &ram, e.head, total, &err) < 0) {
            error_free(err);
            break;
        }
    }
}

static void fuzz_registers(const uint8_t *data, size_t size)
{
    static struct virtio_pci vp;
    memset(&vp, 0, sizeof(vp));
    virtio_pci_init(&vp, &ops, 2, 0x018000, 1ULL << 9, 1, 256, 24);
    /* Each access: 2 bytes offset, 1 byte length+direction, 4 bytes value. */
    size_t i = 0;
    for (; i + 7 <= size && i < 7 * 256; i += 7) {
        uint64_t off = le_load(data + i, 2) & 0x3fff;
        static const uint32_t lens[4] = {1, 2, 4, 8};
        uint32_t len = lens[data[i + 2] & 3];
        bool write = data[i + 2] & 4;
        uint8_t buf[8] = {0};
        memcpy(buf, data + i + 3, 4);
        if (data[i + 2] & 8) {
            /* A configuration-space access instead (incl. the cfg window). */
            unsigned coff = (unsigned)(off & 0xff);
            unsigned clen = len > 4 ? 4 : len;
            if (write) {
                pci_config_write(&vp.pci, coff, clen, (uint32_t)le_load(buf, 4));
            } else {
                pci_config_read(&vp.pci, coff, clen);
            }
        } else {
            virtio_pci_bar_io(&vp.pci, 0, off, buf, len, write);
        }
    }
    /* The rest: a saved transport state. */
    struct byte_reader r;
    reader_init(&r, data + i, size - i);
    struct error *err = NULL;
    if (virtio_pci_load(&vp, &r, &err) < 0) {
        error_free(err);
    }
    pthread_mutex_destroy(&vp.lock);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    if (data[0] & 1) {
        fuzz_queue(data + 1, size - 1);
    } else {
        fuzz_registers(data + 1, size - 1);
    }
    return 0;
}
