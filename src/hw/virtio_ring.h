/*
 * The split virtqueue of virtio 1.0 (section 2.4), device side: taking
 * descriptor chains from the available ring and returning them through the
 * used ring.  Everything the driver wrote is untrusted: indices are checked
 * against the queue size, chains against loops, and every buffer against
 * guest RAM (guest_ram_ptr), so a broken or hostile driver gets an error,
 * never a wild host access.
 */
#ifndef SNAPVM_HW_VIRTIO_RING_H
#define SNAPVM_HW_VIRTIO_RING_H

#include <stdbool.h>
#include <stdint.h>

#include "machine/ram.h"
#include "util/error.h"

#define VIRTQ_DESC_F_NEXT          1
#define VIRTQ_DESC_F_WRITE         2
#define VIRTQ_DESC_F_INDIRECT      4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

#define VIRTQ_MAX_SEGS 130 /* header + 128 data segments + status */

struct virtq {
    uint16_t size; /* number of descriptors (a power of two) */
    bool enabled;
    uint64_t desc; /* guest-physical addresses of the three parts */
    uint64_t avail;
    uint64_t used;
    uint16_t last_avail; /* next available-ring entry the device takes */
    uint16_t used_idx;   /* the device's copy of used->idx */
};

struct virtq_seg {
    uint8_t *ptr;
    uint32_t len;
    bool write; /* device-writable */
};

/* One descriptor chain: device-readable segments first, then writable ones. */
struct virtq_elem {
    uint16_t head;
    unsigned nseg;
    struct virtq_seg seg[VIRTQ_MAX_SEGS];
};

/*
 * Take the next chain.  Returns 1 with *elem filled, 0 if the ring is empty,
 * -1 (with *errp) if the driver broke the rules; the queue should then be
 * considered broken (VIRTIO_CONFIG_S_NEEDS_RESET).
 */
int virtq_pop(struct virtq *q, const struct guest_ram *ram, struct virtq_elem *elem,
              struct error **errp);
/* Return chain `head` with `len` bytes written into its writable buffers. */
int virtq_push(struct virtq *q, const struct guest_ram *ram, uint16_t head, uint32_t len,
               struct error **errp);
/* False if the driver asked not to be interrupted (VIRTQ_AVAIL_F_NO_INTERRUPT). */
bool virtq_should_notify(const struct virtq *q, const struct guest_ram *ram);

/* Byte sizes of the parts for a queue of `size` entries. */
static inline uint64_t virtq_desc_bytes(uint16_t size)
{
    return 16ULL * size;
}
static inline uint64_t virtq_avail_bytes(uint16_t size)
{
    return 6ULL + 2ULL * size;
}
static inline uint64_t virtq_used_bytes(uint16_t size)
{
    return 6ULL + 8ULL * size;
}

#endif
