/*
 * Split virtqueues, device side (see virtio_ring.h).  Layouts from the
 * virtio 1.0 specification, all fields little-endian:
 *   descriptor: le64 addr, le32 len, le16 flags, le16 next      (16 bytes)
 *   available:  le16 flags, le16 idx, le16 ring[size], le16 used_event
 *   used:       le16 flags, le16 idx, {le32 id, le32 len}[size], le16 avail_event
 * Ordering: the driver publishes ring entries before avail->idx, so the
 * device reads idx, then fences, then reads entries and descriptors; the
 * device writes a used entry, fences, then publishes used->idx.
 */
#include "hw/virtio_ring.h"

#include <string.h>

#include "hw/device.h"

static uint8_t *ring_ptr(const struct guest_ram *ram, uint64_t gpa, uint64_t len)
{
    return guest_ram_ptr(ram, gpa, len);
}

static uint16_t load16(const uint8_t *p)
{
    return (uint16_t)le_load(p, 2);
}

static int check_rings(const struct virtq *q, const struct guest_ram *ram, struct error **errp)
{
    if (!q->enabled || !q->size) {
        error_setg(errp, "virtqueue is not enabled");
        return -1;
    }
    if ((q->desc & 15) || (q->avail & 1) || (q->used & 3)) {
        error_setg(errp, "virtqueue rings are misaligned");
        return -1;
    }
    if (!ring_ptr(ram, q->desc, virtq_desc_bytes(q->size)) ||
        !ring_ptr(ram, q->avail, virtq_avail_bytes(q->size)) ||
        !ring_ptr(ram, q->used, virtq_used_bytes(q->size))) {
        error_setg(errp, "virtqueue rings lie outside guest RAM");
        return -1;
    }
    return 0;
}

int virtq_pop(struct virtq *q, const struct guest_ram *ram, struct virtq_elem *elem,
              struct error **errp)
{
    if (check_rings(q, ram, errp) < 0) {
        return -1;
    }
    const uint8_t *avail = ring_ptr(ram, q->avail, virtq_avail_bytes(q->size));
    const uint8_t *desc = ring_ptr(ram, q->desc, virtq_desc_bytes(q->size));
    uint16_t avail_idx = __atomic_load_n((const uint16_t *)(avail + 2), __ATOMIC_ACQUIRE);
    uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
    if (pending == 0) {
        return 0;
    }
    if (pending > q->size) {
        error_setg(errp, "available index %u is %u entries ahead of %u (queue size %u)", avail_idx,
                   pending, q->last_avail, q->size);
        return -1;
    }
    uint16_t head = load16(avail + 4 + 2 * (q->last_avail % q->size));
    if (head >= q->size) {
        error_setg(errp, "descriptor index %u out of range (queue size %u)", head, q->size);
        return -1;
    }
    elem->head = head;
    elem->nseg = 0;
    bool seen_write = false;
    uint16_t i = head;
    for (unsigned n = 0;; n++) {
        if (n >= q->size || elem->nseg >= VIRTQ_MAX_SEGS) {
            error_setg(errp, "descriptor chain from %u is too long or loops", head);
            return -1;
        }
        const uint8_t *d = desc + 16 * i;
        uint64_t addr = le_load(d, 8);
        uint32_t len = (uint32_t)le_load(d + 8, 4);
        uint16_t flags = load16(d + 12);
        uint16_t next = load16(d + 14);
        if (flags & VIRTQ_DESC_F_INDIRECT) {
            error_setg(errp, "indirect descriptor %u, but INDIRECT_DESC was not offered", i);
            return -1;
        }
        bool write = flags & VIRTQ_DESC_F_WRITE;
        if (!write && seen_write) {
            error_setg(errp, "device-readable descriptor %u after a writable one", i);
            return -1;
        }
        seen_write |= write;
        uint8_t *p = ring_ptr(ram, addr, len);
        if (!p && len) {
            error_setg(errp, "descriptor %u: buffer 0x%llx+%u lies outside guest RAM", i,
                       (unsigned long long)addr, len);
            return -1;
        }
        elem->seg[elem->nseg++] = (struct virtq_seg){p, len, write};
        if (!(flags & VIRTQ_DESC_F_NEXT)) {
            break;
        }
        if (next >= q->size) {
            error_setg(errp, "descriptor %u: next %u out of range", i, next);
            return -1;
        }
        i = next;
    }
    q->last_avail++;
    return 1;
}

int virtq_push(struct virtq *q, const struct guest_ram *ram, uint16_t head, uint32_t len,
               struct error **errp)
{
    if (check_rings(q, ram, errp) < 0) {
        return -1;
    }
    uint8_t *used = ring_ptr(ram, q->used, virtq_used_bytes(q->size));
    uint8_t *e = used + 4 + 8 * (q->used_idx % q->size);
    le_store(e, 4, head);
    le_store(e + 4, 4, len);
    q->used_idx++;
    __atomic_store_n((uint16_t *)(used + 2), q->used_idx, __ATOMIC_RELEASE);
    guest_ram_mark_dirty(ram, used, 4);
    guest_ram_mark_dirty(ram, e, 8);
    return 0;
}

bool virtq_should_notify(const struct virtq *q, const struct guest_ram *ram)
{
    const uint8_t *avail = ring_ptr(ram, q->avail, virtq_avail_bytes(q->size));
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return !avail || !(load16(avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
}
