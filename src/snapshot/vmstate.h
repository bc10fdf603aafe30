/*
 * snapvm's vmstate format: what a snapshot stores past the guest-visible end
 * of its vmstate node.  Layout, from vmstate position 0:
 *
 *   [0, 4096)               header (magic, version, sizes, section offsets,
 *                           CRC-32s of the device section and of the header)
 *   [2 MiB, +ram_size)      guest RAM, page i at ram_offset + i * 4096;
 *                           ram_offset (2 MiB) is cluster aligned for every
 *                           qcow2 cluster size
 *   [ram end, ...)          device-state section: records (id, version,
 *                           length, payload), one per vCPU, one for the
 *                           VM-wide KVM state, one per device
 *   [devices end, ...)      description section (version 2 on): what the
 *                           snapshot is -- its node set, parent and the
 *                           VM's shape, as a JSON text (describe.h) -- so
 *                           that an image describes itself
 *   [pack_offset, ...)      pack area (version 3): the non-zero pages of
 *                           *packed* clusters, one after another
 *   [pack end, ...)         pack map (version 3): an entry per packed
 *                           cluster, where its pages lie (pack.h)
 *
 * Versions: 1 had no description section (its header CRC sits at byte
 * 88); 2 adds the section's offset, size and CRC-32 (header CRC at 108);
 * 3 adds the pack area and its map (header CRC at 152).  All are read: a
 * version-1 vmstate loads with the node-selection rules of the command
 * that loads it, as it always did.  A save writes version 2 unless it
 * packed a cluster, so that a snapvm that reads only 2 still loads what it
 * can.  A newer version is refused with an error that says so.
 *
 * The device section comes after RAM because a live save writes RAM while
 * the guest runs, before the device state exists: RAM's place cannot depend
 * on the size of what is captured last.
 *
 * The RAM section has a fixed layout rather than a stream so that live save
 * can rewrite a dirtied page in place and restore can map clusters straight
 * into guest memory.  All-zero clusters are never written: qcow2 reads
 * unallocated clusters as zeros.  RAM carries no checksum on purpose: a
 * checksum would force every restore to read all of RAM before the guest
 * runs, which is exactly what instant restore avoids; qcow2's own metadata
 * (checked by qemu-img check) protects where the clusters are.
 *
 * All integers are little-endian.  A vmstate written by QEMU (a "QEVM"
 * migration stream) or by anything else is refused, never misread.
 */
#ifndef SNAPVM_SNAPSHOT_VMSTATE_H
#define SNAPVM_SNAPSHOT_VMSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/error.h"

#define VMSTATE_MAGIC       "SNAPVMST"
#define VMSTATE_VERSION     3 /* the newest written and read; 1 to 3 are read */
#define VMSTATE_VERSION_MIN 1
#define VMSTATE_HEADER_SIZE 4096u
#define VMSTATE_PAGE_SIZE   4096u
#define VMSTATE_RAM_ALIGN   (2u << 20)
/* A device section larger than this is corrupt, not a real machine. */
#define VMSTATE_MAX_DEVICES_SIZE (64u << 20)
#define VMSTATE_MAX_ID           63
/* A description larger than this is corrupt (a real one is a few KiB). */
#define VMSTATE_MAX_DESC_SIZE (1u << 20)

struct vmstate_header {
    uint32_t version;
    uint32_t page_size;
    uint64_t ram_size;
    uint32_t vcpu_count;
    uint32_t flags;
    uint64_t vm_clock_ns;
    uint64_t devices_offset;
    uint64_t devices_size;
    uint32_t devices_crc;
    uint64_t ram_offset;
    uint64_t ram_pages_written; /* informational: non-zero pages stored */
    /* Version 2: the description section (desc_size 0: none). */
    uint64_t desc_offset;
    uint64_t desc_size;
    uint32_t desc_crc;
    /* Version 3: packed RAM (pack.h; pack_unit 0: no pack area, version 2). */
    uint64_t pack_offset; /* vmstate position of pack slot 0 */
    uint64_t pack_pages;  /* slots in the pack area */
    uint32_t pack_unit;   /* pages per packed cluster */
    uint32_t map_crc;
    uint64_t map_offset;
    uint64_t map_size;
};

/* The CRC-32 used for the device section (zlib's). */
uint32_t vmstate_crc32(const void *data, size_t len);
/* Where the RAM section starts, and where the device section follows it. */
#define VMSTATE_RAM_OFFSET VMSTATE_RAM_ALIGN
uint64_t vmstate_devices_offset(uint64_t ram_size);
/* Where the description section goes: right after the device section. */
uint64_t vmstate_desc_offset(const struct vmstate_header *h);
/*
 * Where the pack area starts (version 3): past the largest device and
 * description sections there can be, so that a save can pack pages while
 * the guest runs, long before it knows the size of either.
 */
uint64_t vmstate_pack_offset(uint64_t ram_size);
/* Bytes of one pack-map entry (a packed cluster) for clusters of `unit` pages. */
uint64_t vmstate_map_entry_size(uint32_t unit);
/* Total vmstate size (what the snapshot records as vm_state_size). */
uint64_t vmstate_total_size(const struct vmstate_header *h);

/* Fill `out` (VMSTATE_HEADER_SIZE bytes) with the encoded header: version 3 if it has a
 * pack area, else 2. */
void vmstate_header_encode(const struct vmstate_header *h, uint8_t *out);
/*
 * Decode and validate a header read from the start of a vmstate.  `where`
 * names the snapshot and node for error messages.  Rejects QEMU streams,
 * foreign data, bad CRCs, unknown versions and inconsistent offsets.
 */
int vmstate_header_decode(const uint8_t *buf, size_t len, uint64_t vm_state_size,
                          struct vmstate_header *h, const char *where, struct error **errp);

struct vmstate_record {
    char id[VMSTATE_MAX_ID + 1];
    uint32_t version;
    const uint8_t *data; /* points into the parsed section */
    uint32_t len;
};

/* Append one record to a device section being built. */
void vmstate_record_add(struct byte_buf *section, const char *id, uint32_t version,
                        const void *data, size_t len);
/*
 * Split a device section into records (pointing into `data`).  Every length
 * is checked; duplicate or malformed ids are errors.  *records is malloc'd.
 */
int vmstate_records_parse(const uint8_t *data, size_t len, struct vmstate_record **records,
                          size_t *count, const char *where, struct error **errp);
/* Find a record by id; NULL if absent. */
const struct vmstate_record *vmstate_record_find(const struct vmstate_record *records, size_t count,
                                                 const char *id);

#endif
