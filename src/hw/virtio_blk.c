/*
 * virtio-blk (virtio 1.0, section 5.2) on the modern PCI transport.
 *
 * A request is a descriptor chain: a 16-byte header (le32 type, le32
 * reserved, le64 sector) in device-readable buffers, the data, and a final
 * status byte in the last device-writable buffer.  Requests are served
 * synchronously on the vCPU thread that wrote the doorbell, through the
 * block layer (block.h), which serialises access per node.
 * Features offered: VERSION_1, SEG_MAX, BLK_SIZE, FLUSH, and RO for a
 * read-only node.
 */
#include "hw/virtio_blk.h"

#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "hw/virtio_pci.h"
#include "machine/board.h"
#include "util/log.h"

#define VIRTIO_ID_BLOCK 2
#define QUEUE_MAX       256
#define SECTOR          512ULL

#define VIRTIO_BLK_F_SEG_MAX  2
#define VIRTIO_BLK_F_RO       5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH    9

#define VIRTIO_BLK_T_IN     0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_T_FLUSH  4
#define VIRTIO_BLK_T_GET_ID 8

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define SEG_MAX    128
#define CONFIG_LEN 24 /* capacity, size_max, seg_max, geometry, blk_size */

struct virtio_blk {
    struct virtio_pci vp; /* first */
    struct block_node *node;
    struct virtq_elem elem;
};

/* Copy `len` bytes starting `skip` bytes into the segments [first, last). */
static void seg_copy(const struct guest_ram *ram, struct virtq_elem *e, unsigned first,
                     unsigned last, uint64_t skip, uint8_t *buf, uint64_t len, bool to_guest)
{
    for (unsigned i = first; i < last && len; i++) {
        struct virtq_seg *s = &e->seg[i];
        if (skip >= s->len) {
            skip -= s->len;
            continue;
        }
        uint64_t n = s->len - skip;
        if (n > len) {
            n = len;
        }
        if (to_guest) {
            memcpy(s->ptr + skip, buf, n);
            guest_ram_mark_dirty(ram, s->ptr + skip, n);
        } else {
            memcpy(buf, s->ptr + skip, n);
        }
        buf += n;
        len -= n;
        skip = 0;
    }
}

static uint64_t seg_bytes(const struct virtq_elem *e, bool write)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < e->nseg; i++) {
        if (e->seg[i].write == write) {
            n += e->seg[i].len;
        }
    }
    return n;
}

/*
 * Serve one chain.  Returns the bytes written to the guest (used.len), or -1
 * if the chain is malformed (no room for the header or the status byte).
 */
static int64_t serve(struct virtio_blk *b, struct virtq_elem *e)
{
    const struct guest_ram *ram = machine_guest_ram(b->vp.pci.dev.machine);
    uint64_t in_bytes = seg_bytes(e, false), out_bytes = seg_bytes(e, true);
    if (in_bytes < 16 || out_bytes < 1) {
        return -1;
    }
    unsigned nread = 0;
    while (nread < e->nseg && !e->seg[nread].write) {
        nread++;
    }
    uint8_t hdr[16];
    seg_copy(ram, e, 0, nread, 0, hdr, 16, false);
    uint32_t type = (uint32_t)le_load(hdr, 4);
    uint64_t sector = le_load(hdr + 8, 8);
    uint64_t data_in = in_bytes - 16;  /* guest -> device data (OUT) */
    uint64_t data_out = out_bytes - 1; /* device -> guest data (IN) */
    uint64_t capacity = block_node_length(b->node) / SECTOR;
    uint8_t status = VIRTIO_BLK_S_OK;
    uint64_t written = 0;
    struct error *err = NULL;

    switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool is_read = type == VIRTIO_BLK_T_IN;
        uint64_t len = is_read ? data_out : data_in;
        if (len % SECTOR || sector > capacity || len / SECTOR > capacity - sector) {
            status = VIRTIO_BLK_S_IOERR;
            break;
        }
        if (!is_read && block_node_read_only(b->node)) {
            status = VIRTIO_BLK_S_IOERR;
            break;
        }
        uint8_t *buf = malloc(len ? len : 1);
        if (!buf) {
            abort();
        }
        if (is_read) {
            if (block_pread(b->node, sector * SECTOR, buf, len, &err) < 0) {
                status = VIRTIO_BLK_S_IOERR;
            } else {
                seg_copy(ram, e, nread, e->nseg, 0, buf, len, true);
                written = len;
            }
        } else {
            seg_copy(ram, e, 0, nread, 16, buf, len, false);
            if (block_pwrite(b->node, sector * SECTOR, buf, len, &err) < 0) {
                status = VIRTIO_BLK_S_IOERR;
            }
        }
        free(buf);
        break;
    }
    case VIRTIO_BLK_T_FLUSH:
        if (block_flush(b->node, &err) < 0) {
            status = VIRTIO_BLK_S_IOERR;
        }
        break;
    case VIRTIO_BLK_T_GET_ID: {
        /* The ID string is not NUL-terminated when it fills all 20 bytes. */
        char id[20] = {0};
        const char *name = block_node_name(b->node);
        memcpy(id, name, strnlen(name, sizeof(id)));
        uint64_t n = data_out < sizeof(id) ? data_out : sizeof(id);
        seg_copy(ram, e, nread, e->nseg, 0, (uint8_t *)id, n, true);
        written = n;
        break;
    }
    default:
        status = VIRTIO_BLK_S_UNSUPP;
        break;
    }
    if (err) {
        log_warn("%s: %s", b->vp.pci.dev.id, err->message);
        error_free(err);
    }
    /* The status byte is the last byte of the writable part. */
    seg_copy(ram, e, nread, e->nseg, out_bytes - 1, &status, 1, true);
    return (int64_t)(written + 1);
}

static void blk_notify(struct virtio_pci *vp, unsigned qi)
{
    struct virtio_blk *b = (struct virtio_blk *)vp;
    const struct guest_ram *ram = machine_guest_ram(vp->pci.dev.machine);
    struct virtq *q = &vp->vq[qi];
    bool done_any = false;
    for (;;) {
        struct error *err = NULL;
        int rc = virtq_pop(q, ram, &b->elem, &err);
        if (rc == 0) {
            break;
        }
        int64_t len = rc > 0 ? serve(b, &b->elem) : -1;
        if (rc < 0 || len < 0 || virtq_push(q, ram, b->elem.head, (uint32_t)len, &err) < 0) {
            virtio_pci_needs_reset(vp, err ? err->message : "malformed virtio-blk request");
            error_free(err);
            break;
        }
        done_any = true;
    }
    if (done_any) {
        virtio_pci_notify_used(vp, qi);
    }
}

static void blk_config_read(struct virtio_pci *vp, uint64_t offset, uint8_t *data, uint32_t len)
{
    struct virtio_blk *b = (struct virtio_blk *)vp;
    uint8_t cfg[CONFIG_LEN] = {0};
    le_store(cfg + 0, 8, block_node_length(b->node) / SECTOR); /* capacity */
    le_store(cfg + 12, 4, SEG_MAX);                            /* seg_max */
    le_store(cfg + 20, 4, SECTOR);                             /* blk_size */
    for (uint32_t i = 0; i < len; i++) {
        data[i] = offset + i < sizeof(cfg) ? cfg[offset + i] : 0;
    }
}

static const struct virtio_ops blk_vops = {
        .notify = blk_notify,
        .config_read = blk_config_read,
        .reset = NULL,
};

static struct virtio_blk *to_blk(struct device *dev)
{
    return (struct virtio_blk *)dev;
}

static void blk_reset(struct device *dev)
{
    struct virtio_blk *b = to_blk(dev);
    pthread_mutex_lock(&b->vp.lock);
    virtio_pci_reset(&b->vp);
    pthread_mutex_unlock(&b->vp.lock);
}

/* State v1: the transport (PCI config, registers, queues), then the capacity. */
static void blk_save(struct device *dev, struct byte_buf *out)
{
    struct virtio_blk *b = to_blk(dev);
    pthread_mutex_lock(&b->vp.lock);
    virtio_pci_save(&b->vp, out);
    buf_put_u64(out, block_node_length(b->node));
    pthread_mutex_unlock(&b->vp.lock);
}

/* Parse a record (lock held): the transport, then the capacity, which must be this disk's. */
static int blk_parse(struct virtio_blk *b, const void *data, size_t len,
                     struct virtio_pci_state *st, struct error **errp)
{
    struct byte_reader r;
    reader_init(&r, data, len);
    if (virtio_pci_parse(&b->vp, &r, st, errp) < 0) {
        return -1;
    }
    uint64_t length = reader_u64(&r);
    if (reader_finish(&r, "virtio-blk state", errp) < 0) {
        return -1;
    }
    if (length != block_node_length(b->node)) {
        error_setg(errp, "disk '%s' is %llu bytes, but was %llu bytes when saved",
                   block_node_name(b->node), (unsigned long long)block_node_length(b->node),
                   (unsigned long long)length);
        return -1;
    }
    return 0;
}

static int blk_check(struct device *dev, const void *data, size_t len, struct error **errp)
{
    struct virtio_blk *b = to_blk(dev);
    struct virtio_pci_state st;
    pthread_mutex_lock(&b->vp.lock);
    int rc = blk_parse(b, data, len, &st, errp);
    pthread_mutex_unlock(&b->vp.lock);
    return rc;
}

static int blk_load(struct device *dev, const void *data, size_t len, struct error **errp)
{
    struct virtio_blk *b = to_blk(dev);
    struct virtio_pci_state st;
    pthread_mutex_lock(&b->vp.lock);
    int rc = blk_parse(b, data, len, &st, errp);
    if (rc == 0) {
        virtio_pci_apply(&b->vp, &st);
    }
    pthread_mutex_unlock(&b->vp.lock);
    return rc;
}

static void blk_free(struct device *dev)
{
    struct virtio_blk *b = to_blk(dev);
    struct error *err = NULL;
    if (b->node && !block_node_read_only(b->node) && block_flush(b->node, &err) < 0) {
        log_warn("%s: flush on exit: %s", dev->id, err->message);
        error_free(err);
    }
    pthread_mutex_destroy(&b->vp.lock);
    free(b);
}

static struct block_node *blk_node(const struct device *dev)
{
    return ((const struct virtio_blk *)dev)->node;
}

static const struct device_ops blk_ops = {
        .type = "virtio-blk-pci",
        .version = 1,
        .reset = blk_reset,
        .save = blk_save,
        .check = blk_check,
        .load = blk_load,
        .free = blk_free,
        .block_node = blk_node,
};

struct device *virtio_blk_create(struct machine *m, struct pci_bus *bus, struct block_node *node,
                                 const char *id, struct error **errp)
{
    struct virtio_blk *b = calloc(1, sizeof(*b));
    if (!b) {
        abort();
    }
    b->node = node;
    b->vp.pci.dev.ops = &blk_ops;
    uint64_t features = (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) |
                        (1ULL << VIRTIO_BLK_F_FLUSH);
    if (block_node_read_only(node)) {
        features |= 1ULL << VIRTIO_BLK_F_RO;
    }
    /* Class 01/80/00: mass storage, other. */
    virtio_pci_init(&b->vp, &blk_vops, VIRTIO_ID_BLOCK, 0x018000, features, 1, QUEUE_MAX,
                    CONFIG_LEN);
    machine_add_device(m, &b->vp.pci.dev, id);
    if (pci_bus_plug(bus, &b->vp.pci, errp) < 0) {
        return NULL;
    }
    return &b->vp.pci.dev;
}
