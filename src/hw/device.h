/*
 * The one device interface of snapvm.
 *
 * Every device model (UART, PCI host bridge, virtio-blk-pci) embeds a
 * struct device and provides a struct device_ops: reset, and save/load of
 * its state for snapshots.  Guest accesses reach a device through the I/O
 * regions it registers with the machine (port I/O or MMIO), each with an
 * io_fn handler; handlers run on vCPU threads, so a device protects its
 * state with its own lock.
 */
#ifndef SNAPVM_HW_DEVICE_H
#define SNAPVM_HW_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/error.h"

struct block_node;
struct device;
struct machine;

struct device_ops {
    const char *type; /* e.g. "serial", "virtio-blk-pci" */
    uint32_t version; /* version of the saved-state format */
    void (*reset)(struct device *dev);
    /* Append the state to `out`; called with all vCPUs paused. */
    void (*save)(struct device *dev, struct byte_buf *out);
    /*
     * Loading is split so that a whole-VM load can refuse a bad record
     * before it changes anything: check() parses and validates a record
     * written by save() (every length, every field) and changes nothing;
     * load() replaces the state from a record that check() accepted, and
     * then cannot fail (it parses the same bytes the same way).
     */
    int (*check)(struct device *dev, const void *data, size_t len, struct error **errp);
    int (*load)(struct device *dev, const void *data, size_t len, struct error **errp);
    void (*free)(struct device *dev);
    /* The block node behind the device (NULL or absent: none). */
    struct block_node *(*block_node)(const struct device *dev);
};

struct device {
    const struct device_ops *ops;
    char id[48]; /* stable and unique within the machine: names the vmstate record */
    struct machine *machine;
    struct device *next;
};

enum io_space {
    IO_SPACE_PIO,
    IO_SPACE_MMIO,
};

/*
 * An access of `len` bytes (1, 2, 4 or 8) at `offset` inside a region.  For a
 * read the handler fills `data` (little-endian); unhandled bytes read as 0xff.
 */
typedef void (*io_fn)(struct device *dev, uint64_t offset, uint8_t *data, uint32_t len,
                      bool is_write);

/* Accessors used by the snapshot code (through machine_next_device()). */
const char *device_id(const struct device *dev);
const char *device_type(const struct device *dev);
uint32_t device_state_version(const struct device *dev);
/* The block node a device is backed by (a virtio-blk drive), or NULL. */
struct block_node *device_block_node(const struct device *dev);
void device_save(struct device *dev, struct byte_buf *out);
/* check: no side effects; load: only after check accepted the same record. */
int device_check(struct device *dev, const void *data, size_t len, struct error **errp);
int device_load(struct device *dev, const void *data, size_t len, struct error **errp);
void device_reset(struct device *dev);

/* Little-endian helpers for register files. */
static inline uint64_t le_load(const uint8_t *p, uint32_t len)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < len; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static inline void le_store(uint8_t *p, uint32_t len, uint64_t v)
{
    for (uint32_t i = 0; i < len; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

#endif
