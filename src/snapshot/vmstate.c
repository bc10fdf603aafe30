/*
 * Encoding and validation of snapvm's vmstate header and device-state
 * records (format described in vmstate.h).  Nothing here does I/O: the
 * callers read and write the bytes through the block layer, so the format
 * can be unit-tested and fuzzed on plain buffers.
 */
#include "snapshot/vmstate.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Byte offsets of the header fields. */
enum {
    HDR_MAGIC = 0,
    HDR_VERSION = 8,
    HDR_SIZE = 12,
    HDR_PAGE_SIZE = 16,
    HDR_VCPUS = 20,
    HDR_RAM_SIZE = 24,
    HDR_FLAGS = 32,
    HDR_VM_CLOCK = 40,
    HDR_DEV_OFFSET = 48,
    HDR_DEV_SIZE = 56,
    HDR_DEV_CRC = 64,
    HDR_RAM_OFFSET = 72,
    HDR_RAM_PAGES = 80,
    HDR_V1_CRC = 88, /* version 1: CRC-32 of bytes [0, 88) */
    HDR_V1_END = 92,
    HDR_DESC_OFFSET = 88, /* version 2 on */
    HDR_DESC_SIZE = 96,
    HDR_DESC_CRC = 104,
    HDR_CRC = 108,         /* version 2: CRC-32 of bytes [0, HDR_CRC) */
    HDR_PACK_OFFSET = 112, /* version 3 on */
    HDR_PACK_PAGES = 120,
    HDR_PACK_UNIT = 128,
    HDR_MAP_CRC = 132,
    HDR_MAP_OFFSET = 136,
    HDR_MAP_SIZE = 144,
    HDR_V3_CRC = 152, /* version 3: CRC-32 of bytes [0, HDR_V3_CRC) */
};

/* Where a header of this version keeps its own CRC. */
static int header_crc_offset(uint32_t version)
{
    return version == 1 ? HDR_V1_CRC : version == 2 ? HDR_CRC : HDR_V3_CRC;
}

/* First bytes of a QEMU migration stream ("QEVM", big-endian version 3). */
static const uint8_t qemu_stream_magic[4] = {'Q', 'E', 'V', 'M'};

static uint32_t crc32_of(const void *data, size_t len)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)len);
}

uint64_t vmstate_devices_offset(uint64_t ram_size)
{
    return VMSTATE_RAM_OFFSET + ram_size;
}

uint64_t vmstate_desc_offset(const struct vmstate_header *h)
{
    return h->devices_offset + h->devices_size;
}

uint64_t vmstate_pack_offset(uint64_t ram_size)
{
    uint64_t end =
            vmstate_devices_offset(ram_size) + VMSTATE_MAX_DEVICES_SIZE + VMSTATE_MAX_DESC_SIZE;
    return (end + VMSTATE_RAM_ALIGN - 1) / VMSTATE_RAM_ALIGN * VMSTATE_RAM_ALIGN;
}

uint64_t vmstate_map_entry_size(uint32_t unit)
{
    return 8 + ((uint64_t)unit + 63) / 64 * 8;
}

uint64_t vmstate_total_size(const struct vmstate_header *h)
{
    if (h->pack_unit) {
        return h->map_offset + h->map_size;
    }
    return h->desc_size ? h->desc_offset + h->desc_size : h->devices_offset + h->devices_size;
}

void vmstate_header_encode(const struct vmstate_header *h, uint8_t *out)
{
    memset(out, 0, VMSTATE_HEADER_SIZE);
    memcpy(out + HDR_MAGIC, VMSTATE_MAGIC, 8);
    uint32_t version = h->pack_unit ? 3 : 2;
    le_put(out + HDR_VERSION, version, 4);
    le_put(out + HDR_SIZE, VMSTATE_HEADER_SIZE, 4);
    le_put(out + HDR_PAGE_SIZE, h->page_size, 4);
    le_put(out + HDR_VCPUS, h->vcpu_count, 4);
    le_put(out + HDR_RAM_SIZE, h->ram_size, 8);
    le_put(out + HDR_FLAGS, h->flags, 4);
    le_put(out + HDR_VM_CLOCK, h->vm_clock_ns, 8);
    le_put(out + HDR_DEV_OFFSET, h->devices_offset, 8);
    le_put(out + HDR_DEV_SIZE, h->devices_size, 8);
    le_put(out + HDR_DEV_CRC, h->devices_crc, 4);
    le_put(out + HDR_RAM_OFFSET, h->ram_offset, 8);
    le_put(out + HDR_RAM_PAGES, h->ram_pages_written, 8);
    le_put(out + HDR_DESC_OFFSET, h->desc_size ? h->desc_offset : 0, 8);
    le_put(out + HDR_DESC_SIZE, h->desc_size, 8);
    le_put(out + HDR_DESC_CRC, h->desc_size ? h->desc_crc : 0, 4);
    if (version >= 3) {
        le_put(out + HDR_PACK_OFFSET, h->pack_offset, 8);
        le_put(out + HDR_PACK_PAGES, h->pack_pages, 8);
        le_put(out + HDR_PACK_UNIT, h->pack_unit, 4);
        le_put(out + HDR_MAP_CRC, h->map_crc, 4);
        le_put(out + HDR_MAP_OFFSET, h->map_offset, 8);
        le_put(out + HDR_MAP_SIZE, h->map_size, 8);
    }
    int crc_at = header_crc_offset(version);
    le_put(out + crc_at, crc32_of(out, (size_t)crc_at), 4);
}

static int check_magic(const uint8_t *buf, size_t len, const char *where, struct error **errp)
{
    if (len >= 4 && !memcmp(buf, qemu_stream_magic, 4)) {
        error_setg(errp,
                   "%s: the vmstate was written by QEMU (a QEVM migration stream), not by "
                   "snapvm; snapvm cannot load it (load it with QEMU, or take a new snapshot "
                   "with snapvm)",
                   where);
        return -1;
    }
    if (len < HDR_V1_END || memcmp(buf, VMSTATE_MAGIC, 8) != 0) {
        error_setg(errp, "%s: the vmstate was not written by snapvm (no '%s' magic)", where,
                   VMSTATE_MAGIC);
        return -1;
    }
    return 0;
}

/*
 * Version 3's pack area and map: at their fixed places (vmstate.h), a
 * cluster of a power of two pages, not many more slots than RAM has pages
 * (each page is packed at most once per save, but a batch's last cluster
 * of slots may be part empty), and a map of whole entries, at most one per
 * cluster.  Whether
 * each cluster's pages lie inside the area is the map's own check (pack.c).
 */
static int check_packs(const struct vmstate_header *h, uint64_t vm_state_size, const char *where,
                       struct error **errp)
{
    uint64_t pages = h->ram_size / VMSTATE_PAGE_SIZE, unit = h->pack_unit;
    bool unit_ok = unit >= 2 && unit <= 512 && (unit & (unit - 1)) == 0;
    if (!unit_ok || h->pack_offset != vmstate_pack_offset(h->ram_size) || h->pack_pages % unit ||
        h->pack_pages > 2 * pages + unit ||
        h->map_offset != h->pack_offset + h->pack_pages * VMSTATE_PAGE_SIZE ||
        h->map_size % vmstate_map_entry_size(h->pack_unit) ||
        h->map_size / vmstate_map_entry_size(h->pack_unit) > (pages + unit - 1) / unit ||
        vmstate_desc_offset(h) + h->desc_size > h->pack_offset) {
        error_setg(errp,
                   "%s: vmstate pack area (at %llu, %llu pages in clusters of %u) or its map "
                   "(at %llu, %llu bytes) is invalid",
                   where, (unsigned long long)h->pack_offset, (unsigned long long)h->pack_pages,
                   h->pack_unit, (unsigned long long)h->map_offset,
                   (unsigned long long)h->map_size);
        return -1;
    }
    (void)vm_state_size; /* the truncation check covers the map's end */
    return 0;
}

/* Offsets and sizes must describe sections that lie inside the vmstate. */
static int check_layout(const struct vmstate_header *h, uint64_t vm_state_size, const char *where,
                        struct error **errp)
{
    if (h->page_size != VMSTATE_PAGE_SIZE) {
        error_setg(errp, "%s: vmstate page size %u is not supported (expected %u)", where,
                   h->page_size, VMSTATE_PAGE_SIZE);
        return -1;
    }
    if (h->ram_offset != VMSTATE_RAM_OFFSET || h->ram_size % VMSTATE_PAGE_SIZE ||
        h->ram_size == 0 || h->ram_size > (1ULL << 46)) {
        error_setg(errp, "%s: vmstate RAM section (offset %llu, size %llu) is invalid", where,
                   (unsigned long long)h->ram_offset, (unsigned long long)h->ram_size);
        return -1;
    }
    if (h->devices_offset != vmstate_devices_offset(h->ram_size) ||
        h->devices_size > VMSTATE_MAX_DEVICES_SIZE) {
        error_setg(errp, "%s: vmstate device section at %llu (+%llu bytes) is invalid", where,
                   (unsigned long long)h->devices_offset, (unsigned long long)h->devices_size);
        return -1;
    }
    if (vmstate_total_size(h) > vm_state_size) {
        error_setg(errp,
                   "%s: vmstate is truncated: the snapshot stores %llu bytes, the header needs "
                   "%llu",
                   where, (unsigned long long)vm_state_size,
                   (unsigned long long)vmstate_total_size(h));
        return -1;
    }
    if (h->desc_size &&
        (h->desc_offset != vmstate_desc_offset(h) || h->desc_size > VMSTATE_MAX_DESC_SIZE)) {
        error_setg(errp, "%s: vmstate description section at %llu (+%llu bytes) is invalid", where,
                   (unsigned long long)h->desc_offset, (unsigned long long)h->desc_size);
        return -1;
    }
    if (h->version >= 3 && check_packs(h, vm_state_size, where, errp) < 0) {
        return -1;
    }
    if (h->vcpu_count == 0 || h->vcpu_count > 1024) {
        error_setg(errp, "%s: vmstate vCPU count %u is invalid", where, h->vcpu_count);
        return -1;
    }
    return 0;
}

int vmstate_header_decode(const uint8_t *buf, size_t len, uint64_t vm_state_size,
                          struct vmstate_header *h, const char *where, struct error **errp)
{
    if (check_magic(buf, len, where, errp) < 0) {
        return -1;
    }
    uint32_t version = (uint32_t)le_get(buf + HDR_VERSION, 4);
    if (version < VMSTATE_VERSION_MIN || version > VMSTATE_VERSION) {
        error_setg(errp,
                   "%s: vmstate format version %u is not supported (this snapvm reads versions "
                   "%u to %u%s)",
                   where, version, VMSTATE_VERSION_MIN, VMSTATE_VERSION,
                   version > VMSTATE_VERSION ? ": it was written by a newer snapvm" : "");
        return -1;
    }
    int crc_at = header_crc_offset(version);
    if ((size_t)crc_at + 4 > len || le_get(buf + crc_at, 4) != crc32_of(buf, (size_t)crc_at)) {
        error_setg(errp, "%s: vmstate header checksum mismatch (the header is corrupt)", where);
        return -1;
    }
    memset(h, 0, sizeof(*h));
    h->version = version;
    h->page_size = (uint32_t)le_get(buf + HDR_PAGE_SIZE, 4);
    h->vcpu_count = (uint32_t)le_get(buf + HDR_VCPUS, 4);
    h->ram_size = le_get(buf + HDR_RAM_SIZE, 8);
    h->flags = (uint32_t)le_get(buf + HDR_FLAGS, 4);
    h->vm_clock_ns = le_get(buf + HDR_VM_CLOCK, 8);
    h->devices_offset = le_get(buf + HDR_DEV_OFFSET, 8);
    h->devices_size = le_get(buf + HDR_DEV_SIZE, 8);
    h->devices_crc = (uint32_t)le_get(buf + HDR_DEV_CRC, 4);
    h->ram_offset = le_get(buf + HDR_RAM_OFFSET, 8);
    h->ram_pages_written = le_get(buf + HDR_RAM_PAGES, 8);
    if (version >= 2) {
        h->desc_offset = le_get(buf + HDR_DESC_OFFSET, 8);
        h->desc_size = le_get(buf + HDR_DESC_SIZE, 8);
        h->desc_crc = (uint32_t)le_get(buf + HDR_DESC_CRC, 4);
    }
    if (version >= 3) {
        h->pack_offset = le_get(buf + HDR_PACK_OFFSET, 8);
        h->pack_pages = le_get(buf + HDR_PACK_PAGES, 8);
        h->pack_unit = (uint32_t)le_get(buf + HDR_PACK_UNIT, 4);
        h->map_crc = (uint32_t)le_get(buf + HDR_MAP_CRC, 4);
        h->map_offset = le_get(buf + HDR_MAP_OFFSET, 8);
        h->map_size = le_get(buf + HDR_MAP_SIZE, 8);
    }
    return check_layout(h, vm_state_size, where, errp);
}

void vmstate_record_add(struct byte_buf *section, const char *id, uint32_t version,
                        const void *data, size_t len)
{
    size_t id_len = strlen(id);
    buf_put_u16(section, (uint16_t)id_len);
    buf_append(section, id, id_len);
    buf_put_u32(section, version);
    buf_put_u32(section, (uint32_t)len);
    buf_append(section, data, len);
}

static bool id_is_valid(const char *id, size_t len)
{
    if (len == 0 || len > VMSTATE_MAX_ID) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (id[i] < 0x21 || id[i] > 0x7e) {
            return false;
        }
    }
    return true;
}

/* Parse one record at r's position; returns 0, or -1 with *errp set. */
static int parse_record(struct byte_reader *r, struct vmstate_record *rec, const char *where,
                        struct error **errp)
{
    uint16_t id_len = reader_u16(r);
    char id[VMSTATE_MAX_ID + 1] = "";
    if (r->overrun || id_len > r->len - r->pos ||
        !id_is_valid((const char *)r->data + r->pos, id_len)) {
        error_setg(errp, "%s: vmstate device record at byte %zu has an invalid id", where, r->pos);
        return -1;
    }
    reader_get(r, id, id_len);
    rec->version = reader_u32(r);
    rec->len = reader_u32(r);
    if (r->overrun || rec->len > r->len - r->pos) {
        error_setg(errp, "%s: vmstate record '%s' is truncated (%u bytes announced)", where, id,
                   rec->len);
        return -1;
    }
    memcpy(rec->id, id, sizeof(id));
    rec->data = r->data + r->pos;
    r->pos += rec->len;
    return 0;
}

int vmstate_records_parse(const uint8_t *data, size_t len, struct vmstate_record **records,
                          size_t *count, const char *where, struct error **errp)
{
    struct byte_reader r;
    reader_init(&r, data, len);
    struct vmstate_record *list = NULL;
    size_t n = 0, cap = 0;
    while (r.pos < r.len) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            struct vmstate_record *grown = realloc(list, cap * sizeof(*list));
            if (!grown) {
                abort();
            }
            list = grown;
        }
        if (parse_record(&r, &list[n], where, errp) < 0) {
            free(list);
            return -1;
        }
        if (vmstate_record_find(list, n, list[n].id)) {
            error_setg(errp, "%s: vmstate has two records for '%s'", where, list[n].id);
            free(list);
            return -1;
        }
        n++;
    }
    *records = list;
    *count = n;
    return 0;
}

const struct vmstate_record *vmstate_record_find(const struct vmstate_record *records, size_t count,
                                                 const char *id)
{
    for (size_t i = 0; i < count; i++) {
        if (!strcmp(records[i].id, id)) {
            return &records[i];
        }
    }
    return NULL;
}

uint32_t vmstate_crc32(const void *data, size_t len)
{
    return crc32_of(data, len);
}
