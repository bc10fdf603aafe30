/*
 * The qcow2 vmstate area: where a VM's RAM and device state are written
 * before a snapshot takes them over (past the guest disk, at the first L1
 * entry that describes no guest cluster, as the qcow2 spec puts it), its
 * discard after a failed save, and reading or mapping a snapshot's vmstate.
 */
#include "block/qcow2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_vmstate_range(struct qcow2_state *s, uint64_t pos, uint64_t len,
                               struct error **errp)
{
    uint64_t base = qcow2_vmstate_offset(s, s->size);
    uint64_t max = ((uint64_t)QCOW2_MAX_L1_BYTES / 8) << (s->cluster_bits + s->l2_bits);
    if (pos > max || len > max - pos || base > max - pos - len) {
        error_setg(errp, "node '%s': vmstate range %llu+%llu is too large for this image",
                   s->node->name, (unsigned long long)pos, (unsigned long long)len);
        return -1;
    }
    return 0;
}

int qcow2_vmstate_write(struct block_node *node, uint64_t pos, const void *buf, size_t len,
                        struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (qcow2_check_writable(s, errp) < 0 || check_vmstate_range(s, pos, len, errp) < 0) {
        return -1;
    }
    return qcow2_write_active(s, qcow2_vmstate_offset(s, s->size) + pos, buf, len, errp);
}

int qcow2_vmstate_read(struct block_node *node, uint64_t pos, void *buf, size_t len,
                       struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (check_vmstate_range(s, pos, len, errp) < 0) {
        return -1;
    }
    return qcow2_read_l1(s, s->l1, s->l1_size, qcow2_vmstate_offset(s, s->size) + pos, buf, len,
                         false, errp);
}

static struct qcow2_snapshot *vmstate_snapshot(struct qcow2_state *s, const char *name_or_id,
                                               uint64_t pos, uint64_t len, struct error **errp)
{
    struct qcow2_snapshot *sn = qcow2_snapshot_lookup(s, name_or_id, errp);
    if (sn && (pos > sn->vm_state_size || len > sn->vm_state_size - pos)) {
        error_setg(errp,
                   "node '%s': range %llu+%llu is beyond the vmstate of snapshot '%s' (%llu "
                   "bytes)",
                   s->node->name, (unsigned long long)pos, (unsigned long long)len, sn->name,
                   (unsigned long long)sn->vm_state_size);
        return NULL;
    }
    return sn;
}

int qcow2_snapshot_vmstate_read(struct block_node *node, const char *name_or_id, uint64_t pos,
                                void *buf, size_t len, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_snapshot *sn = vmstate_snapshot(s, name_or_id, pos, len, errp);
    if (!sn) {
        return -1;
    }
    uint64_t *l1 = qcow2_read_snapshot_l1(s, sn, errp);
    if (!l1) {
        return -1;
    }
    int rc = qcow2_read_l1(s, l1, sn->l1_size, qcow2_vmstate_offset(s, sn->disk_size) + pos, buf,
                           len, false, errp);
    free(l1);
    return rc;
}

static void add_extent(struct block_extent **ext, size_t *n, size_t *cap, uint64_t pos,
                       uint64_t len, enum block_extent_kind kind, uint64_t host)
{
    if (*n > 0) {
        struct block_extent *last = &(*ext)[*n - 1];
        if (last->kind == kind && last->pos + last->len == pos &&
            (kind != BLOCK_EXTENT_DATA || last->host_offset + last->len == host)) {
            last->len += len;
            return;
        }
    }
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *ext = realloc(*ext, *cap * sizeof(**ext));
        if (!*ext) {
            abort();
        }
    }
    (*ext)[(*n)++] =
            (struct block_extent){.pos = pos, .len = len, .host_offset = host, .kind = kind};
}

int qcow2_snapshot_vmstate_map(struct block_node *node, const char *name_or_id, uint64_t pos,
                               uint64_t len, struct block_extent **extents, size_t *count,
                               struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_snapshot *sn = vmstate_snapshot(s, name_or_id, pos, len, errp);
    if (!sn) {
        return -1;
    }
    uint64_t *l1 = qcow2_read_snapshot_l1(s, sn, errp);
    if (!l1) {
        return -1;
    }
    uint64_t base = qcow2_vmstate_offset(s, sn->disk_size);
    size_t cap = 0;
    int rc = 0;
    while (len > 0) {
        uint64_t voff = base + pos, in = voff & (s->cluster_size - 1);
        uint64_t n = s->cluster_size - in < len ? s->cluster_size - in : len;
        uint64_t e;
        if ((rc = qcow2_get_entry(s, l1, sn->l1_size, voff, &e, errp)) < 0) {
            break;
        }
        switch (qcow2_entry_type(s, e)) {
        case QCOW2_CLUSTER_NORMAL:
            add_extent(extents, count, &cap, pos, n, BLOCK_EXTENT_DATA, (e & L2E_OFFSET_MASK) + in);
            break;
        case QCOW2_CLUSTER_COMPRESSED:
            add_extent(extents, count, &cap, pos, n, BLOCK_EXTENT_UNMAPPABLE, 0);
            break;
        default:
            add_extent(extents, count, &cap, pos, n, BLOCK_EXTENT_ZERO, 0);
            break;
        }
        pos += n;
        len -= n;
    }
    free(l1);
    if (rc < 0) {
        free(*extents);
        *extents = NULL;
        *count = 0;
    }
    return rc;
}
