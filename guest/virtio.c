/*
 * A polled virtio-blk driver for the built-in guest (kernel half, CPL0).
 *
 * It finds virtio-blk devices (modern virtio-pci, device ID 0x1042) on PCI
 * bus 0 through the 0xCF8/0xCFC configuration mechanism, walks their
 * vendor capabilities for the common, notify and device configuration
 * structures, and sets up queue 0 with four descriptors.  A request is three
 * descriptors (header, one sector, status); the VMM completes it while
 * handling the notify write, so the poll after it is short and bounded.
 */
#include "guest.h"

#define VIRTIO_VENDOR  0x1af4
#define VIRTIO_BLK_DEV 0x1042
#define QSZ            4

#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_DEVICE 4

#define STATUS_ACK       1
#define STATUS_DRIVER    2
#define STATUS_DRIVER_OK 4
#define STATUS_FEAT_OK   8

#define DESC_NEXT  1
#define DESC_WRITE 2

struct vdesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct vqueue {
    struct vdesc desc[QSZ];
    struct {
        uint16_t flags;
        uint16_t idx;
        uint16_t ring[QSZ];
        uint16_t used_event;
    } avail __attribute__((aligned(2)));
    struct {
        uint16_t flags;
        uint16_t idx;
        struct {
            uint32_t id;
            uint32_t len;
        } ring[QSZ];
        uint16_t avail_event;
    } used __attribute__((aligned(4)));
};

struct blk_req {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct vdisk {
    volatile uint8_t *common;
    volatile uint8_t *notify;
    volatile uint8_t *device;
    uint16_t last_used;
    struct vqueue q __attribute__((aligned(16)));
    struct blk_req req;
    volatile uint8_t status;
};

static struct vdisk disks[MAX_DISKS];

static uint32_t pci_addr(uint32_t dev, uint32_t off)
{
    return 0x80000000u | (dev << 11) | (off & 0xfc);
}

static uint32_t pci_read32(uint32_t dev, uint32_t off)
{
    outl(0xcf8, pci_addr(dev, off));
    return inl(0xcfc);
}

static void pci_write32(uint32_t dev, uint32_t off, uint32_t v)
{
    outl(0xcf8, pci_addr(dev, off));
    outl(0xcfc, v);
}

static uint8_t pci_read8(uint32_t dev, uint32_t off)
{
    return (uint8_t)(pci_read32(dev, off) >> ((off & 3) * 8));
}

static volatile uint8_t *cap_addr(uint32_t dev, uint32_t cap)
{
    uint32_t bar = pci_read8(dev, cap + 4);
    uint32_t off = pci_read32(dev, cap + 8);
    if (bar > 5) {
        return 0;
    }
    uint64_t base = pci_read32(dev, 0x10 + bar * 4);
    if ((base & 0x6) == 0x4) { /* 64-bit BAR */
        base |= (uint64_t)pci_read32(dev, 0x14 + bar * 4) << 32;
    }
    return (volatile uint8_t *)((base & ~0xfULL) + off);
}

static bool disk_setup(struct vdisk *d, uint32_t dev)
{
    uint32_t notify_mult = 0;
    for (uint32_t cap = pci_read8(dev, 0x34), n = 0; cap && n < 16;
         cap = pci_read8(dev, cap + 1), n++) {
        if (pci_read8(dev, cap) != 0x09) {
            continue;
        }
        uint8_t type = pci_read8(dev, cap + 3);
        if (type == CAP_COMMON && !d->common) {
            d->common = cap_addr(dev, cap);
        } else if (type == CAP_NOTIFY && !d->notify) {
            d->notify = cap_addr(dev, cap);
            notify_mult = pci_read32(dev, cap + 16);
        } else if (type == CAP_DEVICE && !d->device) {
            d->device = cap_addr(dev, cap);
        }
    }
    if (!d->common || !d->notify || !d->device) {
        return false;
    }
    pci_write32(dev, 0x04, pci_read32(dev, 0x04) | 0x2); /* memory space */

    volatile uint8_t *c = d->common;
    c[0x14] = 0; /* reset */
    c[0x14] = STATUS_ACK | STATUS_DRIVER;
    *(volatile uint32_t *)(c + 0x00) = 1; /* device_feature_select: bits 32..63 */
    if (!(*(volatile uint32_t *)(c + 0x04) & 1)) {
        return false; /* no VIRTIO_F_VERSION_1 */
    }
    *(volatile uint32_t *)(c + 0x08) = 0;
    *(volatile uint32_t *)(c + 0x0c) = 0;
    *(volatile uint32_t *)(c + 0x08) = 1;
    *(volatile uint32_t *)(c + 0x0c) = 1; /* VERSION_1 only */
    c[0x14] = STATUS_ACK | STATUS_DRIVER | STATUS_FEAT_OK;
    if (!(c[0x14] & STATUS_FEAT_OK)) {
        return false;
    }
    *(volatile uint16_t *)(c + 0x16) = 0; /* queue_select */
    if (*(volatile uint16_t *)(c + 0x18) < QSZ) {
        return false;
    }
    *(volatile uint16_t *)(c + 0x18) = QSZ;
    uint16_t notify_off = *(volatile uint16_t *)(c + 0x1e);
    *(volatile uint64_t *)(c + 0x20) = (uint64_t)&d->q.desc;
    *(volatile uint64_t *)(c + 0x28) = (uint64_t)&d->q.avail;
    *(volatile uint64_t *)(c + 0x30) = (uint64_t)&d->q.used;
    *(volatile uint16_t *)(c + 0x1c) = 1; /* queue_enable */
    d->notify += (uint64_t)notify_off * notify_mult;
    c[0x14] = STATUS_ACK | STATUS_DRIVER | STATUS_FEAT_OK | STATUS_DRIVER_OK;
    d->last_used = d->q.used.idx;
    return true;
}

void virtio_probe(void)
{
    for (uint32_t dev = 0; dev < 32 && g.nr_disks < MAX_DISKS; dev++) {
        uint32_t id = pci_read32(dev, 0);
        if ((id & 0xffff) != VIRTIO_VENDOR || (id >> 16) != VIRTIO_BLK_DEV) {
            continue;
        }
        struct vdisk *d = &disks[g.nr_disks];
        if (!disk_setup(d, dev)) {
            kputs_line("guest: virtio-blk setup failed", 30);
            continue;
        }
        uint32_t lo = *(volatile uint32_t *)(d->device + 0);
        uint32_t hi = *(volatile uint32_t *)(d->device + 4);
        g.disk_sectors[g.nr_disks] = ((uint64_t)hi << 32) | lo;
        g.nr_disks++;
    }
}

int virtio_disk_io(uint32_t disk, uint64_t lba, void *buf, bool write)
{
    if (disk >= g.nr_disks) {
        return DISK_ENODEV;
    }
    if (lba >= g.disk_sectors[disk]) {
        return DISK_ERANGE;
    }
    struct vdisk *d = &disks[disk];
    struct vqueue *q = &d->q;
    d->req.type = write ? 1 : 0; /* VIRTIO_BLK_T_OUT / _IN */
    d->req.reserved = 0;
    d->req.sector = lba;
    d->status = 0xff;
    q->desc[0] = (struct vdesc){(uint64_t)&d->req, sizeof(d->req), DESC_NEXT, 1};
    q->desc[1] =
            (struct vdesc){(uint64_t)buf, 512, (uint16_t)(DESC_NEXT | (write ? 0 : DESC_WRITE)), 2};
    q->desc[2] = (struct vdesc){(uint64_t)&d->status, 1, DESC_WRITE, 0};
    q->avail.ring[q->avail.idx % QSZ] = 0;
    barrier();
    q->avail.idx++;
    barrier();
    *(volatile uint16_t *)d->notify = 0;
    for (int i = 0; i < 1000 && *(volatile uint16_t *)&q->used.idx == d->last_used; i++) {
        barrier();
    }
    if (*(volatile uint16_t *)&q->used.idx == d->last_used) {
        return DISK_EIO;
    }
    d->last_used++;
    return d->status == 0 ? 0 : DISK_EIO;
}
