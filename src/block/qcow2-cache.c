/*
 * A small cache of metadata clusters (L2 tables, refcount blocks) for the
 * qcow2 driver.  It is write-through: callers change a cached cluster and
 * write the changed bytes to the file at once (so the cache never holds
 * dirty data and eviction is free, and the write order that crash safety
 * depends on is the order of the calls).  Entries in use are pinned so that
 * a nested lookup cannot evict them; when every entry is pinned the cache
 * grows.  One exception to write-through: a refcount walk over a whole
 * snapshot batches its updates (qcow2_cache_mark_dirty), and writes each
 * changed block once at the end, before anything depends on them.
 */
#include "block/qcow2.h"

#include <stdlib.h>
#include <string.h>

void qcow2_cache_init(struct qcow2_cache *c, const char *what, size_t count)
{
    c->what = what;
    c->count = count;
    c->clock = 0;
    c->entries = calloc(count, sizeof(*c->entries));
    if (!c->entries) {
        abort();
    }
}

void qcow2_cache_destroy(struct qcow2_cache *c)
{
    for (size_t i = 0; i < c->count; i++) {
        free(c->entries[i].data);
    }
    free(c->entries);
    c->entries = NULL;
    c->count = 0;
}

static struct qcow2_cache_entry *find(struct qcow2_cache *c, uint64_t offset)
{
    for (size_t i = 0; i < c->count; i++) {
        if (c->entries[i].offset == offset && c->entries[i].data) {
            return &c->entries[i];
        }
    }
    return NULL;
}

static struct qcow2_cache_entry *victim(struct qcow2_state *s, struct qcow2_cache *c)
{
    struct qcow2_cache_entry *best = NULL;
    for (size_t i = 0; i < c->count; i++) {
        struct qcow2_cache_entry *e = &c->entries[i];
        if (e->pins == 0 && (!best || !e->data || (best->data && e->lru < best->lru))) {
            best = e;
            if (!e->data) {
                break;
            }
        }
    }
    if (!best) {
        /* Everything pinned: grow (rare; nesting depth is small). */
        size_t n = c->count * 2;
        struct qcow2_cache_entry *ne = realloc(c->entries, n * sizeof(*ne));
        if (!ne) {
            abort();
        }
        memset(ne + c->count, 0, (n - c->count) * sizeof(*ne));
        best = &ne[c->count];
        c->entries = ne;
        c->count = n;
    }
    if (!best->data) {
        best->data = malloc(s->cluster_size);
        if (!best->data) {
            abort();
        }
    }
    best->offset = 0;
    return best;
}

int qcow2_cache_get(struct qcow2_state *s, struct qcow2_cache *c, uint64_t offset, uint8_t **data,
                    struct error **errp)
{
    struct qcow2_cache_entry *e = find(c, offset);
    if (!e) {
        e = victim(s, c);
        if (qcow2_file_pread(s, offset, e->data, s->cluster_size, errp) < 0) {
            error_prepend(errp, "reading %s at %#llx", c->what, (unsigned long long)offset);
            return -1;
        }
        e->offset = offset;
    }
    e->pins++;
    e->lru = ++c->clock;
    *data = e->data;
    return 0;
}

uint8_t *qcow2_cache_get_empty(struct qcow2_state *s, struct qcow2_cache *c, uint64_t offset)
{
    struct qcow2_cache_entry *e = find(c, offset);
    if (!e) {
        e = victim(s, c);
        e->offset = offset;
    }
    memset(e->data, 0, s->cluster_size);
    e->pins++;
    e->lru = ++c->clock;
    return e->data;
}

void qcow2_cache_put(struct qcow2_cache *c, uint8_t *data)
{
    for (size_t i = 0; i < c->count; i++) {
        if (c->entries[i].data == data) {
            c->entries[i].pins--;
            return;
        }
    }
}

void qcow2_cache_forget(struct qcow2_cache *c, uint64_t offset)
{
    struct qcow2_cache_entry *e = find(c, offset);
    if (e && e->pins == 0) {
        e->offset = 0;
    }
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint8_t *data, uint64_t lo, uint64_t hi)
{
    for (size_t i = 0; i < c->count; i++) {
        struct qcow2_cache_entry *e = &c->entries[i];
        if (e->data != data) {
            continue;
        }
        if (!e->dirty) {
            e->dirty = true;
            e->pins++; /* a dirty entry must not be evicted */
            e->dirty_lo = lo;
            e->dirty_hi = hi;
        }
        e->dirty_lo = lo < e->dirty_lo ? lo : e->dirty_lo;
        e->dirty_hi = hi > e->dirty_hi ? hi : e->dirty_hi;
        return;
    }
}

int qcow2_cache_write_dirty(struct qcow2_state *s, struct qcow2_cache *c, struct error **errp)
{
    /* An entry whose write fails stays dirty (and pinned): the cached copy is
     * the truth the caller decided on, and the next call writes it again. */
    int rc = 0;
    for (size_t i = 0; i < c->count; i++) {
        struct qcow2_cache_entry *e = &c->entries[i];
        if (!e->dirty) {
            continue;
        }
        if (qcow2_file_pwrite(s, e->offset + e->dirty_lo, e->data + e->dirty_lo,
                              e->dirty_hi - e->dirty_lo, rc < 0 ? NULL : errp) < 0) {
            rc = -1;
            continue;
        }
        e->dirty = false;
        e->pins--;
    }
    return rc;
}
