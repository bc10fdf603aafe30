/*
 * Modern virtio-pci transport (see virtio_pci.h).
 *
 * BAR 0 layout (16 KiB): common configuration at 0x0000, ISR status at
 * 0x1000, device configuration at 0x2000, notifications at 0x3000 (queue
 * n's doorbell at 0x3000 + 4n, notify_off_multiplier 4).  Register offsets
 * of the common configuration, status bits and the feature negotiation
 * rules follow virtio 1.0 section 4.1.4.3 and 3.1.
 */
#include "hw/virtio_pci.h"

#include <string.h>

#include "machine/board.h"
#include "util/log.h"

#define BAR_SIZE    0x4000
#define COMMON_OFF  0x0000
#define COMMON_LEN  0x38
#define ISR_OFF     0x1000
#define DEVICE_OFF  0x2000
#define NOTIFY_OFF  0x3000
#define NOTIFY_MULT 4

#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR    3
#define CAP_DEVICE 4
#define CAP_PCI    5

/* Common configuration registers. */
enum {
    CC_DFSELECT = 0x00,
    CC_DF = 0x04,
    CC_GFSELECT = 0x08,
    CC_GF = 0x0c,
    CC_MSIX = 0x10,
    CC_NUMQ = 0x12,
    CC_STATUS = 0x14,
    CC_CFGGEN = 0x15,
    CC_Q_SELECT = 0x16,
    CC_Q_SIZE = 0x18,
    CC_Q_MSIX = 0x1a,
    CC_Q_ENABLE = 0x1c,
    CC_Q_NOFF = 0x1e,
    CC_Q_DESCLO = 0x20,
    CC_Q_DESCHI = 0x24,
    CC_Q_AVAILLO = 0x28,
    CC_Q_AVAILHI = 0x2c,
    CC_Q_USEDLO = 0x30,
    CC_Q_USEDHI = 0x34,
};

static struct virtio_pci *to_vp(struct pci_device *pd)
{
    return (struct virtio_pci *)pd;
}

static void add_cap(struct virtio_pci *vp, uint8_t type, uint32_t off, uint32_t len, bool notify)
{
    /* virtio_pci_cap after cap_vndr/cap_next: cap_len, cfg_type, bar,
     * padding[3], offset, length (+ notify_off_multiplier). */
    uint8_t body[18] = {0};
    uint8_t n = notify ? 18 : 14;
    body[0] = (uint8_t)(n + 2);
    body[1] = type;
    body[2] = 0; /* BAR 0 */
    le_store(body + 6, 4, off);
    le_store(body + 10, 4, len);
    if (notify) {
        le_store(body + 14, 4, NOTIFY_MULT);
    }
    pci_add_vendor_cap(&vp->pci, body, n, NULL);
}

/*
 * VIRTIO_PCI_CAP_PCI_CFG: the driver writes bar/offset/length into the
 * capability, then reads or writes pci_cfg_data to access that BAR window
 * without mapping it.
 */
static void cfg_cap_access(struct pci_device *pd, unsigned offset, unsigned len, bool is_write)
{
    struct virtio_pci *vp = to_vp(pd);
    unsigned data_off = vp->cfg_cap + 16u;
    if (offset + len <= data_off || offset >= data_off + 4) {
        return;
    }
    uint8_t bar = pd->config[vp->cfg_cap + 4];
    uint32_t boff = (uint32_t)le_load(pd->config + vp->cfg_cap + 8, 4);
    uint32_t blen = (uint32_t)le_load(pd->config + vp->cfg_cap + 12, 4);
    if (bar != 0 || (blen != 1 && blen != 2 && blen != 4) || boff >= BAR_SIZE ||
        boff + blen > BAR_SIZE) {
        return;
    }
    virtio_pci_bar_io(pd, 0, boff, pd->config + data_off, blen, is_write);
}

void virtio_pci_init(struct virtio_pci *vp, const struct virtio_ops *vops, uint16_t device_type,
                     uint32_t class_code, uint64_t features, uint16_t num_queues,
                     uint16_t queue_max, uint32_t device_config_len)
{
    vp->vops = vops;
    pthread_mutex_init(&vp->lock, NULL);
    vp->device_features = features | (1ULL << VIRTIO_F_VERSION_1);
    vp->num_queues = num_queues;
    vp->queue_max = queue_max;
    /* Modern-only device: ID 0x1040 + type, revision 1, subsystem 0x1af4/type. */
    pci_config_init(&vp->pci, 0x1af4, (uint16_t)(0x1040 + device_type), 1, class_code, 0x1af4,
                    device_type);
    pci_set_bar(&vp->pci, 0, BAR_SIZE);
    add_cap(vp, CAP_COMMON, COMMON_OFF, COMMON_LEN, false);
    add_cap(vp, CAP_NOTIFY, NOTIFY_OFF, NOTIFY_MULT * num_queues, true);
    add_cap(vp, CAP_ISR, ISR_OFF, 1, false);
    add_cap(vp, CAP_DEVICE, DEVICE_OFF, device_config_len, false);
    uint8_t body[18] = {20, CAP_PCI};
    uint8_t writable[18] = {0};
    writable[2] = 0xff;                    /* bar */
    memset(writable + 6, 0xff, 4 + 4 + 4); /* offset, length, pci_cfg_data */
    vp->cfg_cap = pci_add_vendor_cap(&vp->pci, body, 18, writable);
    vp->pci.bar_fn = virtio_pci_bar_io;
    vp->pci.config_fn = cfg_cap_access;
    virtio_pci_reset(vp);
}

void virtio_pci_reset(struct virtio_pci *vp)
{
    vp->driver_features = 0;
    vp->device_feature_select = 0;
    vp->driver_feature_select = 0;
    vp->status = 0;
    vp->isr = 0;
    vp->queue_select = 0;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
        vp->vq[i] = (struct virtq){.size = vp->queue_max};
    }
    if (vp->vops && vp->vops->reset) {
        vp->vops->reset(vp);
    }
    pci_set_irq(&vp->pci, false);
}

void virtio_pci_notify_used(struct virtio_pci *vp, unsigned q)
{
    if (virtq_should_notify(&vp->vq[q], machine_guest_ram(vp->pci.dev.machine))) {
        vp->isr |= 1;
        pci_set_irq(&vp->pci, true);
    }
}

void virtio_pci_needs_reset(struct virtio_pci *vp, const char *why)
{
    log_warn("%s: %s; the device needs a reset", vp->pci.dev.id, why);
    vp->status |= VIRTIO_STATUS_NEEDS_RESET;
    if (vp->status & VIRTIO_STATUS_DRIVER_OK) {
        vp->isr |= 2; /* configuration change */
        pci_set_irq(&vp->pci, true);
    }
}

static struct virtq *selected_queue(struct virtio_pci *vp)
{
    return vp->queue_select < vp->num_queues ? &vp->vq[vp->queue_select] : NULL;
}

static void set_status(struct virtio_pci *vp, uint8_t val)
{
    if (val == 0) {
        virtio_pci_reset(vp);
        return;
    }
    if ((val & VIRTIO_STATUS_FEATURES_OK) && !(vp->status & VIRTIO_STATUS_FEATURES_OK)) {
        /* Accept only a subset of what we offered, including VERSION_1. */
        bool ok = !(vp->driver_features & ~vp->device_features) &&
                  (vp->driver_features & (1ULL << VIRTIO_F_VERSION_1));
        if (!ok) {
            val &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
        }
    }
    vp->status = val;
}

static uint64_t common_read(struct virtio_pci *vp, uint64_t off)
{
    struct virtq *q = selected_queue(vp);
    switch (off) {
    case CC_DFSELECT:
        return vp->device_feature_select;
    case CC_DF:
        return vp->device_feature_select < 2
                       ? (uint32_t)(vp->device_features >> (32 * vp->device_feature_select))
                       : 0;
    case CC_GFSELECT:
        return vp->driver_feature_select;
    case CC_GF:
        return vp->driver_feature_select < 2
                       ? (uint32_t)(vp->driver_features >> (32 * vp->driver_feature_select))
                       : 0;
    case CC_MSIX:
    case CC_Q_MSIX:
        return 0xffff; /* VIRTIO_MSI_NO_VECTOR: no MSI-X */
    case CC_NUMQ:
        return vp->num_queues;
    case CC_STATUS:
        return vp->status;
    case CC_CFGGEN:
        return 0;
    case CC_Q_SELECT:
        return vp->queue_select;
    case CC_Q_SIZE:
        return q ? q->size : 0;
    case CC_Q_ENABLE:
        return q ? q->enabled : 0;
    case CC_Q_NOFF:
        return vp->queue_select;
    case CC_Q_DESCLO:
        return q ? (uint32_t)q->desc : 0;
    case CC_Q_DESCHI:
        return q ? q->desc >> 32 : 0;
    case CC_Q_AVAILLO:
        return q ? (uint32_t)q->avail : 0;
    case CC_Q_AVAILHI:
        return q ? q->avail >> 32 : 0;
    case CC_Q_USEDLO:
        return q ? (uint32_t)q->used : 0;
    case CC_Q_USEDHI:
        return q ? q->used >> 32 : 0;
    }
    return 0;
}

static void set_half(uint64_t *reg, bool high, uint32_t val)
{
    *reg = high ? ((*reg & 0xffffffffULL) | ((uint64_t)val << 32))
                : ((*reg & ~0xffffffffULL) | val);
}

static void common_write(struct virtio_pci *vp, uint64_t off, uint32_t val)
{
    struct virtq *q = selected_queue(vp);
    /* Queue layout may only change while the queue is disabled. */
    bool q_writable = q && !q->enabled;
    switch (off) {
    case CC_DFSELECT:
        vp->device_feature_select = val;
        break;
    case CC_GFSELECT:
        vp->driver_feature_select = val;
        break;
    case CC_GF:
        if (vp->driver_feature_select < 2 && !(vp->status & VIRTIO_STATUS_FEATURES_OK)) {
            unsigned shift = 32 * vp->driver_feature_select;
            vp->driver_features =
                    (vp->driver_features & ~(0xffffffffULL << shift)) | ((uint64_t)val << shift);
        }
        break;
    case CC_STATUS:
        set_status(vp, (uint8_t)val);
        break;
    case CC_Q_SELECT:
        vp->queue_select = (uint16_t)val;
        break;
    case CC_Q_SIZE:
        /* A split queue's size is a power of two, at most the maximum. */
        if (q_writable && val && val <= vp->queue_max && !(val & (val - 1))) {
            q->size = (uint16_t)val;
        }
        break;
    case CC_Q_ENABLE:
        if (q && val == 1) {
            q->enabled = true;
            q->last_avail = 0;
            q->used_idx = 0;
        }
        break;
    case CC_Q_DESCLO:
    case CC_Q_DESCHI:
        if (q_writable) {
            set_half(&q->desc, off == CC_Q_DESCHI, val);
        }
        break;
    case CC_Q_AVAILLO:
    case CC_Q_AVAILHI:
        if (q_writable) {
            set_half(&q->avail, off == CC_Q_AVAILHI, val);
        }
        break;
    case CC_Q_USEDLO:
    case CC_Q_USEDHI:
        if (q_writable) {
            set_half(&q->used, off == CC_Q_USEDHI, val);
        }
        break;
    default:
        break; /* read-only or unknown */
    }
}

/* Register widths of the common configuration, for splitting 64-bit accesses. */
static void common_io(struct virtio_pci *vp, uint64_t off, uint8_t *data, uint32_t len,
                      bool is_write)
{
    if (len == 8 && (off == CC_Q_DESCLO || off == CC_Q_AVAILLO || off == CC_Q_USEDLO)) {
        common_io(vp, off, data, 4, is_write);
        common_io(vp, off + 4, data + 4, 4, is_write);
        return;
    }
    if (is_write) {
        common_write(vp, off, (uint32_t)le_load(data, len));
    } else {
        le_store(data, len, common_read(vp, off));
    }
}

void virtio_pci_bar_io(struct pci_device *pd, int bar, uint64_t offset, uint8_t *data, uint32_t len,
                       bool is_write)
{
    struct virtio_pci *vp = to_vp(pd);
    (void)bar;
    pthread_mutex_lock(&vp->lock);
    if (offset < COMMON_OFF + COMMON_LEN) {
        common_io(vp, offset - COMMON_OFF, data, len, is_write);
    } else if (offset == ISR_OFF) {
        if (!is_write) {
            /* Reading the ISR acknowledges it and deasserts INTx. */
            memset(data, 0, len);
            data[0] = vp->isr;
            vp->isr = 0;
            pci_set_irq(&vp->pci, false);
        }
    } else if (offset >= DEVICE_OFF && offset < NOTIFY_OFF) {
        if (!is_write) {
            memset(data, 0, len);
            vp->vops->config_read(vp, offset - DEVICE_OFF, data, len);
        }
    } else if (offset >= NOTIFY_OFF &&
               offset < NOTIFY_OFF + (uint64_t)NOTIFY_MULT * vp->num_queues) {
        unsigned q = (unsigned)(offset - NOTIFY_OFF) / NOTIFY_MULT;
        if (is_write && (vp->status & VIRTIO_STATUS_DRIVER_OK) &&
            !(vp->status & VIRTIO_STATUS_NEEDS_RESET) && vp->vq[q].enabled) {
            vp->vops->notify(vp, q);
        }
    } else if (!is_write) {
        memset(data, 0, len);
    }
    pthread_mutex_unlock(&vp->lock);
}

/* Transport state v1 (inside the device's record). */
void virtio_pci_save(struct virtio_pci *vp, struct byte_buf *out)
{
    pci_config_save(&vp->pci, out);
    buf_put_u64(out, vp->driver_features);
    buf_put_u32(out, vp->device_feature_select);
    buf_put_u32(out, vp->driver_feature_select);
    buf_put_u8(out, vp->status);
    buf_put_u8(out, vp->isr);
    buf_put_u16(out, vp->queue_select);
    buf_put_u16(out, vp->num_queues);
    for (unsigned i = 0; i < vp->num_queues; i++) {
        struct virtq *q = &vp->vq[i];
        buf_put_u16(out, q->size);
        buf_put_u8(out, q->enabled);
        buf_put_u64(out, q->desc);
        buf_put_u64(out, q->avail);
        buf_put_u64(out, q->used);
        buf_put_u16(out, q->last_avail);
        buf_put_u16(out, q->used_idx);
    }
}

int virtio_pci_parse(const struct virtio_pci *vp, struct byte_reader *r,
                     struct virtio_pci_state *st, struct error **errp)
{
    memset(st, 0, sizeof(*st));
    reader_get(r, st->config, sizeof(st->config));
    st->driver_features = reader_u64(r);
    st->device_feature_select = reader_u32(r);
    st->driver_feature_select = reader_u32(r);
    st->status = reader_u8(r);
    st->isr = reader_u8(r);
    st->queue_select = reader_u16(r);
    uint16_t nq = reader_u16(r);
    if (!r->overrun && nq != vp->num_queues) {
        error_setg(errp, "saved with %u queues, this device has %u", nq, vp->num_queues);
        return -1;
    }
    for (unsigned i = 0; i < vp->num_queues && !r->overrun; i++) {
        struct virtq *q = &st->vq[i];
        q->size = reader_u16(r);
        q->enabled = reader_u8(r) != 0;
        q->desc = reader_u64(r);
        q->avail = reader_u64(r);
        q->used = reader_u64(r);
        q->last_avail = reader_u16(r);
        q->used_idx = reader_u16(r);
        if (!r->overrun && (q->size > vp->queue_max || (q->size & (q->size - 1)))) {
            error_setg(errp, "queue %u: size %u is invalid (a power of two, at most %u)", i,
                       q->size, vp->queue_max);
            return -1;
        }
    }
    if (r->overrun) {
        error_setg(errp, "virtio transport state is truncated");
        return -1;
    }
    return 0;
}

void virtio_pci_apply(struct virtio_pci *vp, const struct virtio_pci_state *st)
{
    memcpy(vp->pci.config, st->config, sizeof(st->config));
    vp->driver_features = st->driver_features;
    vp->device_feature_select = st->device_feature_select;
    vp->driver_feature_select = st->driver_feature_select;
    vp->status = st->status;
    vp->isr = st->isr;
    vp->queue_select = st->queue_select;
    memcpy(vp->vq, st->vq, sizeof(st->vq));
    pci_set_irq(&vp->pci, st->isr != 0);
}

int virtio_pci_load(struct virtio_pci *vp, struct byte_reader *r, struct error **errp)
{
    struct virtio_pci_state st;
    if (virtio_pci_parse(vp, r, &st, errp) < 0) {
        return -1;
    }
    virtio_pci_apply(vp, &st);
    return 0;
}
