/*
 * Application header extensions of a qcow2 image: a small, fixed-size
 * record that a user of the block layer (the whole-VM snapshot code keeps
 * "which snapshot is the VM at" there) stores in the image's header
 * cluster under a header-extension type of its own.
 *
 * QEMU's qcow2 specification lets an image carry header extensions that a
 * reader does not know: QEMU ignores them when opening and writes them back
 * unchanged whenever it rewrites the header (qemu-iotests 031 checks that),
 * and qemu-img check does not count them.  So the record survives QEMU and
 * qemu-img, and an image that carries one stays a plain qcow2 image.
 *
 * Added by engineer "describe" (announced in /work/team/bugs/qcow2.md);
 * self-contained: it reads and writes only the extension area of the
 * header cluster, never the fixed header fields that qcow2.c updates.
 *
 * Crash safety.  Rewriting an existing record is one write of its payload
 * in place; a payload that lies inside one 512-byte sector is written
 * atomically, and the caller protects its payload with a checksum anyway
 * (a torn write then reads as "no record").  Adding a record the first
 * time has one commit point: the payload and a new end-of-extensions
 * marker go past the current end marker first (nothing reads there), are
 * flushed, and only then the 8-byte type/length word replaces the old end
 * marker -- an aligned 8-byte write inside one sector.
 */
#include <stdlib.h>
#include <string.h>

#include "block/qcow2.h"

/* The extension area never needs more than this much of the header cluster. */
#define EXT_AREA_MAX (64u << 10)

struct ext_area {
    uint8_t *buf;
    uint64_t start; /* first extension */
    uint64_t limit; /* end of the area: cluster end, or where the backing file name starts */
};

static int read_area(struct qcow2_state *s, struct ext_area *a, struct error **errp)
{
    uint64_t len = s->cluster_size < EXT_AREA_MAX ? s->cluster_size : EXT_AREA_MAX;
    a->buf = calloc(1, len);
    if (!a->buf) {
        abort();
    }
    if (qcow2_file_pread(s, 0, a->buf, len, errp) < 0) {
        free(a->buf);
        return -1;
    }
    a->start = s->header_length;
    a->limit = len;
    uint64_t backing = be64_get(a->buf + 8);
    if (backing && backing > a->start && backing < a->limit) {
        a->limit = backing;
    }
    return 0;
}

/*
 * Find extension `type`: *pos is its type word; else, with -1, *pos is
 * where the end marker is (or where the next extension would go).
 */
static int find_ext(const struct ext_area *a, uint32_t type, uint64_t *pos, uint32_t *len)
{
    uint64_t p = a->start;
    while (p + 8 <= a->limit) {
        uint32_t t = be32_get(a->buf + p), l = be32_get(a->buf + p + 4);
        if (t == 0) {
            break;
        }
        if (l > a->limit - p - 8) {
            break; /* qcow2_open refuses such an image; be safe anyway */
        }
        if (t == type) {
            *pos = p;
            *len = l;
            return 0;
        }
        p += 8 + ((l + 7ull) & ~7ull);
    }
    *pos = p;
    return -1;
}

int qcow2_header_ext_read(struct block_node *node, uint32_t type, void *buf, size_t len,
                          size_t *out_len, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    struct ext_area a;
    if (read_area(s, &a, errp) < 0) {
        return -1;
    }
    uint64_t pos;
    uint32_t l;
    *out_len = 0;
    if (find_ext(&a, type, &pos, &l) == 0) {
        *out_len = l < len ? l : len;
        memcpy(buf, a.buf + pos + 8, *out_len);
    }
    free(a.buf);
    return 0;
}

int qcow2_header_ext_write(struct block_node *node, uint32_t type, const void *buf, size_t len,
                           struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (len == 0 || len % 8 || type == 0) {
        error_setg(errp, "header extension %#x: length %zu must be a non-zero multiple of 8", type,
                   len);
        return -1;
    }
    struct ext_area a;
    if (read_area(s, &a, errp) < 0) {
        return -1;
    }
    uint64_t pos;
    uint32_t old_len;
    int rc = -1;
    if (find_ext(&a, type, &pos, &old_len) == 0) {
        if (old_len != len) {
            error_setg(errp, "'%s': header extension %#x holds %u bytes, not %zu", node->filename,
                       type, old_len, len);
            goto out;
        }
        rc = qcow2_file_pwrite(s, pos + 8, buf, len, errp);
        if (rc == 0) {
            rc = bdrv_child_flush(s->file, errp);
        }
        goto out;
    }
    if (pos + 8 + len + 8 > a.limit) {
        error_setg(errp, "'%s': no room for header extension %#x in the header cluster",
                   node->filename, type);
        goto out;
    }
    uint8_t *tail = calloc(1, len + 8); /* payload, then the new end marker */
    if (!tail) {
        abort();
    }
    memcpy(tail, buf, len);
    uint8_t word[8];
    be32_put(word, type);
    be32_put(word + 4, (uint32_t)len);
    /* Commit point: the type/length word written over the old end marker. */
    rc = qcow2_file_pwrite(s, pos + 8, tail, len + 8, errp);
    if (rc == 0) {
        rc = bdrv_child_flush(s->file, errp);
    }
    if (rc == 0) {
        rc = qcow2_file_pwrite(s, pos, word, sizeof(word), errp);
    }
    if (rc == 0) {
        rc = bdrv_child_flush(s->file, errp);
    }
    free(tail);
out:
    free(a.buf);
    return rc;
}
