/*
 * qcow2 internal snapshots: the snapshot table (parsed with bounds checks,
 * rewritten with unknown extra data kept byte for byte), snapshot
 * create/goto/delete, and the vmstate area (past the guest disk, at the
 * first L1 entry that describes no guest cluster, as the qcow2 spec puts
 * it).
 *
 * Every operation writes new things to unreferenced clusters, flushes, then
 * flips one pointer in the header (nb_snapshots+snapshots_offset, or
 * l1_size+l1_table_offset: adjacent fields, one write inside sector 0),
 * flushes, and frees the old things last.  Refcounts are raised before the
 * pointer flip and lowered after it, so a crash leaves the old or the new
 * state plus leaked clusters at most.  The orderings are spelled out at
 * each operation.
 */
#include "block/qcow2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_HDR       40
#define SNAP_EXTRA_NEW 24 /* vm_state_size (64-bit), disk_size, icount */

static void free_snapshot_fields(struct qcow2_snapshot *sn)
{
    free(sn->id);
    free(sn->name);
    free(sn->extra);
}

void qcow2_free_snapshots(struct qcow2_snapshot *snaps, uint32_t n)
{
    for (uint32_t i = 0; snaps && i < n; i++) {
        free_snapshot_fields(&snaps[i]);
    }
    free(snaps);
}

static char *read_string(struct qcow2_state *s, uint64_t off, uint32_t len, struct error **errp)
{
    char *str = malloc(len + 1);
    if (!str) {
        abort();
    }
    if (qcow2_file_pread(s, off, str, len, errp) < 0) {
        free(str);
        return NULL;
    }
    str[len] = 0;
    return str;
}

static int read_one(struct qcow2_state *s, uint64_t p, uint64_t fsize, struct qcow2_snapshot *sn,
                    uint64_t *next, struct error **errp)
{
    uint8_t h[SNAP_HDR];
    if (p + SNAP_HDR > fsize || qcow2_file_pread(s, p, h, SNAP_HDR, errp) < 0) {
        error_setg(errp, "snapshot table runs past the end of the file");
        return -1;
    }
    sn->l1_offset = be64_get(h);
    sn->l1_size = be32_get(h + 8);
    uint32_t id_len = be16_get(h + 12), name_len = be16_get(h + 14);
    sn->date_sec = be32_get(h + 16);
    sn->date_nsec = be32_get(h + 20);
    sn->vm_clock_nsec = be64_get(h + 24);
    sn->vm_state_size = be32_get(h + 32);
    sn->extra_size = be32_get(h + 36);
    sn->disk_size = s->size;
    if (sn->extra_size > QCOW2_MAX_SNAPSHOT_EXTRA) {
        error_setg(errp, "snapshot extra data of %u bytes exceeds %u", sn->extra_size,
                   QCOW2_MAX_SNAPSHOT_EXTRA);
        return -1;
    }
    uint64_t end = p + SNAP_HDR + sn->extra_size + id_len + name_len;
    if (end > fsize || end - s->snapshots_offset > QCOW2_MAX_SNAPTABLE) {
        error_setg(errp, "snapshot table runs past the end of the file");
        return -1;
    }
    sn->extra = malloc(sn->extra_size ? sn->extra_size : 1);
    if (!sn->extra) {
        abort();
    }
    if (qcow2_file_pread(s, p + SNAP_HDR, sn->extra, sn->extra_size, errp) < 0) {
        return -1;
    }
    if (sn->extra_size >= 8) {
        sn->vm_state_size = be64_get(sn->extra);
    }
    if (sn->extra_size >= 16) {
        sn->disk_size = be64_get(sn->extra + 8);
    }
    sn->id = read_string(s, p + SNAP_HDR + sn->extra_size, id_len, errp);
    sn->name =
            sn->id ? read_string(s, p + SNAP_HDR + sn->extra_size + id_len, name_len, errp) : NULL;
    if (!sn->name) {
        return -1;
    }
    if ((sn->l1_offset & (s->cluster_size - 1)) || (uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
        sn->l1_offset > fsize || (uint64_t)sn->l1_size * 8 > fsize - sn->l1_offset ||
        (sn->l1_size && !sn->l1_offset)) {
        error_setg(errp, "snapshot '%s' has an invalid L1 table (offset %#llx, %u entries)",
                   sn->name, (unsigned long long)sn->l1_offset, sn->l1_size);
        return -1;
    }
    *next = (end + 7) & ~7ull;
    return 0;
}

int qcow2_read_snapshots(struct qcow2_state *s, struct error **errp)
{
    uint64_t fsize = file_node_size(s->file);
    s->snaps = calloc(s->nb_snapshots ? s->nb_snapshots : 1, sizeof(*s->snaps));
    if (!s->snaps) {
        abort();
    }
    uint64_t p = s->snapshots_offset;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (read_one(s, p, fsize, &s->snaps[i], &p, errp) < 0) {
            error_prepend(errp, "snapshot %u", i);
            return -1;
        }
    }
    s->snapshots_size = s->nb_snapshots ? p - s->snapshots_offset : 0;
    return 0;
}

static size_t entry_size(const struct qcow2_snapshot *sn)
{
    return (SNAP_HDR + sn->extra_size + strlen(sn->id) + strlen(sn->name) + 7) & ~(size_t)7;
}

static void serialize(const struct qcow2_snapshot *sn, uint8_t *p)
{
    size_t id_len = strlen(sn->id), name_len = strlen(sn->name);
    memset(p, 0, entry_size(sn));
    be64_put(p, sn->l1_offset);
    be32_put(p + 8, sn->l1_size);
    be16_put(p + 12, (uint16_t)id_len);
    be16_put(p + 14, (uint16_t)name_len);
    be32_put(p + 16, sn->date_sec);
    be32_put(p + 20, sn->date_nsec);
    be64_put(p + 24, sn->vm_clock_nsec);
    be32_put(p + 32, sn->vm_state_size > UINT32_MAX ? 0 : (uint32_t)sn->vm_state_size);
    be32_put(p + 36, sn->extra_size);
    memcpy(p + SNAP_HDR, sn->extra, sn->extra_size);
    memcpy(p + SNAP_HDR + sn->extra_size, sn->id, id_len);
    memcpy(p + SNAP_HDR + sn->extra_size + id_len, sn->name, name_len);
}

/*
 * Replace the on-disk snapshot table with snaps[0..n): write the new table
 * to new clusters, flush, switch nb_snapshots + snapshots_offset (adjacent
 * header fields, one write), flush, then free the old table.
 */
static int write_snapshot_table(struct qcow2_state *s, const struct qcow2_snapshot *snaps,
                                uint32_t n, struct error **errp)
{
    uint64_t size = 0;
    for (uint32_t i = 0; i < n; i++) {
        size += entry_size(&snaps[i]);
    }
    if (size > QCOW2_MAX_SNAPTABLE) {
        error_setg(errp, "the snapshot table would exceed %u MiB", QCOW2_MAX_SNAPTABLE >> 20);
        return -1;
    }
    uint64_t off = 0, clusters = qcow2_clusters(s, size);
    if (n) {
        uint8_t *buf = calloc(1, clusters << s->cluster_bits);
        if (!buf) {
            abort();
        }
        uint64_t p = 0;
        for (uint32_t i = 0; i < n; i++) {
            serialize(&snaps[i], buf + p);
            p += entry_size(&snaps[i]);
        }
        int rc = qcow2_alloc_clusters(s, clusters, &off, errp);
        if (rc == 0) {
            rc = qcow2_file_pwrite(s, off, buf, clusters << s->cluster_bits, errp);
            if (rc == 0) {
                rc = qcow2_barrier(s, errp);
            }
            if (rc < 0) {
                qcow2_free_clusters(s, off, clusters, NULL);
            }
        }
        free(buf);
        if (rc < 0) {
            return -1;
        }
    }
    uint8_t hdr[12];
    be32_put(hdr, n);
    be64_put(hdr + 4, off);
    if (qcow2_write_header_field(s, QCOW2_HDR_SNAPSHOTS, hdr, sizeof(hdr), errp) < 0 ||
        qcow2_barrier(s, errp) < 0) {
        if (n) {
            qcow2_free_clusters(s, off, clusters, NULL);
        }
        return -1;
    }
    uint64_t old_off = s->snapshots_offset, old_clusters = qcow2_clusters(s, s->snapshots_size);
    s->snapshots_offset = off;
    s->snapshots_size = size;
    if (old_off && old_clusters) {
        return qcow2_free_clusters(s, old_off, old_clusters, errp);
    }
    return 0;
}

static int find_snapshot(struct qcow2_state *s, const char *name_or_id)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (!strcmp(s->snaps[i].name, name_or_id)) {
            return (int)i;
        }
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (!strcmp(s->snaps[i].id, name_or_id)) {
            return (int)i;
        }
    }
    return -1;
}

struct qcow2_snapshot *qcow2_snapshot_lookup(struct qcow2_state *s, const char *name_or_id,
                                             struct error **errp)
{
    int i = find_snapshot(s, name_or_id);
    if (i < 0) {
        error_setg(errp, "node '%s' has no snapshot '%s'", s->node->name, name_or_id);
        return NULL;
    }
    return &s->snaps[i];
}

uint64_t *qcow2_read_snapshot_l1(struct qcow2_state *s, const struct qcow2_snapshot *sn,
                                 struct error **errp)
{
    uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, sizeof(uint64_t));
    if (!l1) {
        abort();
    }
    if (sn->l1_size && qcow2_read_table(s, sn->l1_offset, l1, sn->l1_size, errp) < 0) {
        free(l1);
        return NULL;
    }
    uint64_t fsize = file_node_size(s->file);
    for (uint32_t i = 0; i < sn->l1_size; i++) {
        uint64_t off = l1[i] & L1E_OFFSET_MASK;
        if ((off & (s->cluster_size - 1)) || (off && off + s->cluster_size > fsize)) {
            error_setg(errp, "snapshot '%s': L1 entry %u points outside the file", sn->name, i);
            free(l1);
            return NULL;
        }
        l1[i] = off;
    }
    return l1;
}

int qcow2_snapshot_list(struct block_node *node, struct block_snapshot_info **list, size_t *count,
                        struct error **errp)
{
    (void)errp;
    struct qcow2_state *s = node->opaque;
    *list = calloc(s->nb_snapshots ? s->nb_snapshots : 1, sizeof(**list));
    if (!*list) {
        abort();
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        struct block_snapshot_info *d = &(*list)[i];
        const struct qcow2_snapshot *sn = &s->snaps[i];
        snprintf(d->id, sizeof(d->id), "%s", sn->id);
        snprintf(d->name, sizeof(d->name), "%s", sn->name);
        d->vm_state_size = sn->vm_state_size;
        d->date_sec = sn->date_sec;
        d->date_nsec = sn->date_nsec;
        d->vm_clock_nsec = sn->vm_clock_nsec;
        d->disk_size = sn->disk_size;
    }
    *count = s->nb_snapshots;
    return 0;
}

static int check_new_snapshot(struct qcow2_state *s, struct block_snapshot_info *info,
                              struct error **errp)
{
    if (s->refcount_order == 0) {
        error_setg(errp, "node '%s': refcount_bits=1 cannot count the references of a snapshot",
                   s->node->name);
        return -1;
    }
    if (!info->name[0]) {
        error_setg(errp, "node '%s': a snapshot needs a name", s->node->name);
        return -1;
    }
    if (s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS) {
        error_setg(errp, "node '%s' already has %u snapshots", s->node->name, s->nb_snapshots);
        return -1;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (!strcmp(s->snaps[i].name, info->name)) {
            error_setg(errp, "node '%s' already has a snapshot named '%s'", s->node->name,
                       info->name);
            return -1;
        }
        if (info->id[0] && !strcmp(s->snaps[i].id, info->id)) {
            error_setg(errp, "node '%s' already has a snapshot with id '%s'", s->node->name,
                       info->id);
            return -1;
        }
    }
    if (!info->id[0]) {
        unsigned long long max = 0;
        for (uint32_t i = 0; i < s->nb_snapshots; i++) {
            unsigned long long v = strtoull(s->snaps[i].id, NULL, 10);
            max = v > max ? v : max;
        }
        snprintf(info->id, sizeof(info->id), "%llu", max + 1);
    }
    return 0;
}

static void fill_new_snapshot(struct qcow2_state *s, const struct block_snapshot_info *info,
                              uint64_t l1_offset, struct qcow2_snapshot *sn)
{
    memset(sn, 0, sizeof(*sn));
    sn->l1_offset = l1_offset;
    sn->l1_size = s->l1_size;
    sn->id = strdup(info->id);
    sn->name = strdup(info->name);
    sn->date_sec = (uint32_t)info->date_sec;
    sn->date_nsec = info->date_nsec;
    sn->vm_clock_nsec = info->vm_clock_nsec;
    sn->vm_state_size = info->vm_state_size;
    sn->disk_size = s->size;
    sn->extra_size = SNAP_EXTRA_NEW;
    sn->extra = malloc(SNAP_EXTRA_NEW);
    if (!sn->extra) {
        abort();
    }
    be64_put(sn->extra, sn->vm_state_size);
    be64_put(sn->extra + 8, sn->disk_size);
    be64_put(sn->extra + 16, UINT64_MAX); /* icount: record/replay not used */
}

/* Copy of the active L1 for a snapshot, written to new clusters. */
static int write_l1_copy(struct qcow2_state *s, uint64_t *off, struct error **errp)
{
    uint64_t bytes = qcow2_align_up(s, (uint64_t)s->l1_size * 8);
    *off = 0;
    if (!bytes) {
        return 0;
    }
    uint64_t *copy = malloc((size_t)s->l1_size * 8);
    if (!copy) {
        abort();
    }
    for (uint32_t i = 0; i < s->l1_size; i++) {
        copy[i] = s->l1[i] & L1E_OFFSET_MASK; /* COPIED means nothing in an inactive table */
    }
    int rc = qcow2_alloc_clusters(s, bytes >> s->cluster_bits, off, errp);
    if (rc == 0) {
        rc = qcow2_write_table(s, *off, copy, s->l1_size, bytes, errp);
        if (rc < 0) {
            qcow2_free_clusters(s, *off, bytes >> s->cluster_bits, NULL);
        }
    }
    free(copy);
    return rc;
}

uint32_t qcow2_guest_l1_entries(const struct qcow2_state *s, uint32_t l1_size)
{
    return s->l1_vm_state_index < l1_size ? s->l1_vm_state_index : l1_size;
}

/*
 * Create: (1) copy the active L1 to new clusters; (2) raise the refcounts of
 * everything the guest part of it reaches; flush; (3) clear the COPIED flags
 * that no longer hold; (4) hand the vmstate over to the snapshot: drop its
 * L2 tables from the active L1 (their references move to the snapshot's L1
 * copy, so no refcount changes); flush; (5) write the new snapshot table and
 * switch the header to it.  A crash before (5) leaks the copy and the raised
 * refcounts; after it the snapshot exists.
 */
/*
 * Steps (3) and (4): with the raised refcounts on disk, clear the COPIED
 * flags that no longer hold and drop the vmstate L2 tables from the active
 * L1 (their one reference moves to the snapshot's copy), then flush.
 */
static int handover_active(struct qcow2_state *s, uint32_t nguest, struct error **errp)
{
    bool had_vmstate = false;
    for (uint32_t i = nguest; i < s->l1_size; i++) {
        had_vmstate |= s->l1[i] != 0;
        s->l1[i] = 0;
    }
    int rc = qcow2_barrier(s, errp);
    if (rc == 0) {
        rc = qcow2_fix_copied(s, errp); /* writes the L1 if any flag changed */
    }
    if (rc == 0 && had_vmstate) {
        rc = qcow2_write_table(s, s->l1_offset, s->l1, s->l1_size, (uint64_t)s->l1_size * 8, errp);
    }
    return rc == 0 ? qcow2_barrier(s, errp) : -1;
}

/* Step (5): the new table with the snapshot appended, made live by the header. */
static int publish_snapshot(struct qcow2_state *s, const struct block_snapshot_info *info,
                            uint64_t l1_off, struct error **errp)
{
    struct qcow2_snapshot *ns = calloc(s->nb_snapshots + 1, sizeof(*ns));
    if (!ns) {
        abort();
    }
    memcpy(ns, s->snaps, s->nb_snapshots * sizeof(*ns)); /* borrowed entries */
    fill_new_snapshot(s, info, l1_off, &ns[s->nb_snapshots]);
    if (write_snapshot_table(s, ns, s->nb_snapshots + 1, errp) < 0) {
        free_snapshot_fields(&ns[s->nb_snapshots]);
        free(ns);
        return -1;
    }
    free(s->snaps);
    s->snaps = ns;
    s->nb_snapshots++;
    return 0;
}

/* Best effort back to the state before a failed create; what fails here only leaks. */
static void undo_create(struct qcow2_state *s, const uint64_t *saved, uint32_t nguest,
                        uint64_t l1_off, uint64_t l1_clusters)
{
    memcpy(s->l1, saved, (size_t)s->l1_size * 8);
    qcow2_write_table(s, s->l1_offset, s->l1, s->l1_size, (uint64_t)s->l1_size * 8, NULL);
    qcow2_barrier(s, NULL);
    qcow2_update_l1_refcounts(s, saved, 0, nguest, -1, NULL);
    qcow2_free_clusters(s, l1_off, l1_clusters, NULL);
    qcow2_fix_copied(s, NULL);
}

int qcow2_snapshot_create(struct block_node *node, struct block_snapshot_info *info,
                          struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    if (check_new_snapshot(s, info, errp) < 0 || qcow2_flush_deferred(s, errp) < 0) {
        return -1;
    }
    /* A disk-only snapshot keeps no vmstate: free any stray one first. */
    if (info->vm_state_size == 0 && qcow2_vmstate_discard(node, errp) < 0) {
        return -1;
    }
    uint64_t l1_off;
    uint32_t nguest = qcow2_guest_l1_entries(s, s->l1_size);
    uint64_t l1_clusters = qcow2_clusters(s, (uint64_t)s->l1_size * 8);
    if (write_l1_copy(s, &l1_off, errp) < 0) {
        return -1;
    }
    if (qcow2_update_l1_refcounts(s, s->l1, 0, nguest, 1, errp) < 0) {
        qcow2_free_clusters(s, l1_off, l1_clusters, NULL);
        error_prepend(errp, "node '%s'", node->name);
        return -1;
    }
    uint64_t *saved = malloc(((size_t)s->l1_size + 1) * 8);
    if (!saved) {
        abort();
    }
    memcpy(saved, s->l1, (size_t)s->l1_size * 8);
    int rc = handover_active(s, nguest, errp);
    if (rc == 0) {
        rc = publish_snapshot(s, info, l1_off, errp);
    }
    if (rc < 0) {
        undo_create(s, saved, nguest, l1_off, l1_clusters);
        error_prepend(errp, "node '%s': creating snapshot '%s'", node->name, info->name);
    }
    free(saved);
    return rc;
}

/*
 * Goto: (1) build the new active L1 from the snapshot's guest part and
 * raise the refcounts it reaches; flush; (2) clear the COPIED flags in its
 * (shared) L2 tables; (3) write it to new clusters, flush, switch the
 * header's l1_size + l1_table_offset, flush; (4) lower the refcounts of the
 * old active L1 (including any unsaved vmstate) and free it.  A crash before
 * the switch leaves the old disk plus leaks; after it the snapshot's disk.
 */
int qcow2_snapshot_goto(struct block_node *node, const char *name_or_id, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_snapshot *sn = qcow2_snapshot_lookup(s, name_or_id, errp);
    if (!sn || qcow2_flush_deferred(s, errp) < 0) {
        return -1;
    }
    if (sn->disk_size != s->size) {
        error_setg(errp, "snapshot '%s' has a different disk size (%llu, now %llu)", sn->name,
                   (unsigned long long)sn->disk_size, (unsigned long long)s->size);
        return -1;
    }
    uint64_t *snl1 = qcow2_read_snapshot_l1(s, sn, errp);
    if (!snl1) {
        return -1;
    }
    uint32_t size = s->l1_size, nguest = qcow2_guest_l1_entries(s, sn->l1_size);
    uint64_t bytes = qcow2_align_up(s, (uint64_t)size * 8);
    uint64_t *nl1 = calloc(bytes / 8 ? bytes / 8 : 1, sizeof(uint64_t));
    if (!nl1) {
        abort();
    }
    memcpy(nl1, snl1, (size_t)nguest * 8);
    free(snl1);
    uint64_t off = 0;
    bool l1_changed;
    if (qcow2_update_l1_refcounts(s, nl1, 0, nguest, 1, errp) < 0) {
        free(nl1);
        return -1;
    }
    int rc = qcow2_barrier(s, errp);
    if (rc == 0) {
        rc = qcow2_fix_copied_table(s, nl1, size, &l1_changed, errp);
    }
    if (rc == 0 && bytes) {
        rc = qcow2_alloc_clusters(s, bytes >> s->cluster_bits, &off, errp);
        if (rc == 0) {
            rc = qcow2_write_table(s, off, nl1, size, bytes, errp);
        }
    }
    uint8_t hdr[12];
    be32_put(hdr, size);
    be64_put(hdr + 4, off);
    if (rc == 0 && ((rc = qcow2_barrier(s, errp)) == 0)) {
        rc = qcow2_write_header_field(s, QCOW2_HDR_L1, hdr, sizeof(hdr), errp);
    }
    if (rc < 0) {
        if (off) {
            qcow2_free_clusters(s, off, bytes >> s->cluster_bits, NULL);
        }
        qcow2_update_l1_refcounts(s, nl1, 0, nguest, -1, NULL);
        free(nl1);
        error_prepend(errp, "node '%s': going to snapshot '%s'", node->name, name_or_id);
        return -1;
    }
    uint64_t *old = s->l1, old_off = s->l1_offset;
    uint32_t old_size = s->l1_size;
    s->l1 = nl1;
    s->l1_offset = off;
    if (qcow2_barrier(s, errp) < 0 ||
        qcow2_update_l1_refcounts(s, old, 0, old_size, -1, errp) < 0 ||
        (old_size &&
         qcow2_free_clusters(s, old_off, qcow2_clusters(s, (uint64_t)old_size * 8), errp) < 0)) {
        free(old);
        return -1;
    }
    free(old);
    s->dbuf_entry = 0;
    return qcow2_fix_copied(s, errp);
}

/*
 * Delete: switch the header to a snapshot table without the entry first;
 * only then lower the refcounts of what the snapshot's L1 reaches and free
 * that L1 (a crash in between leaks them), and re-establish COPIED flags on
 * the active clusters that became unshared.
 */
int qcow2_snapshot_delete(struct block_node *node, const char *name_or_id, struct error **errp)
{
    struct qcow2_state *s = node->opaque;
    struct qcow2_snapshot *sn = qcow2_snapshot_lookup(s, name_or_id, errp);
    if (!sn || qcow2_flush_deferred(s, errp) < 0) {
        return -1;
    }
    uint32_t idx = (uint32_t)(sn - s->snaps);
    uint64_t *snl1 = qcow2_read_snapshot_l1(s, sn, errp);
    if (!snl1) {
        return -1;
    }
    struct qcow2_snapshot gone = *sn;
    struct qcow2_snapshot *ns = calloc(s->nb_snapshots, sizeof(*ns));
    if (!ns) {
        abort();
    }
    memcpy(ns, s->snaps, idx * sizeof(*ns));
    memcpy(ns + idx, s->snaps + idx + 1, (s->nb_snapshots - idx - 1) * sizeof(*ns));
    if (write_snapshot_table(s, ns, s->nb_snapshots - 1, errp) < 0) {
        free(ns);
        free(snl1);
        error_prepend(errp, "node '%s': deleting snapshot '%s'", node->name, name_or_id);
        return -1;
    }
    free(s->snaps);
    s->snaps = ns;
    s->nb_snapshots--;
    int rc = qcow2_update_l1_refcounts(s, snl1, 0, gone.l1_size, -1, errp);
    if (rc == 0 && gone.l1_size) {
        rc = qcow2_free_clusters(s, gone.l1_offset, qcow2_clusters(s, (uint64_t)gone.l1_size * 8),
                                 errp);
    }
    free(snl1);
    free_snapshot_fields(&gone);
    if (rc == 0) {
        rc = qcow2_fix_copied(s, errp);
    }
    return rc;
}
