/*
 * The "raw" format driver: guest bytes are file bytes, optionally a window
 * of the file (offset/size options, as in QEMU).  No metadata, so nothing
 * to keep crash-consistent; no internal snapshots.
 */
#include "block/block-int.h"

#include <stdlib.h>

#include "util/keyval.h"

struct raw_state {
    uint64_t offset;
    uint64_t size; /* 0: up to the end of the file */
    bool has_size;
};

static const char *const raw_opts[] = {"file", "offset", "size", NULL};

static int raw_open(struct block_node *node, json_t *opts, struct error **errp)
{
    struct raw_state *s = calloc(1, sizeof(*s));
    if (!s) {
        abort();
    }
    s->has_size = json_object_get(opts, "size") != NULL;
    if (kv_get_size(opts, "offset", "raw", &s->offset, errp) < 0 ||
        kv_get_size(opts, "size", "raw", &s->size, errp) < 0) {
        free(s);
        return -1;
    }
    uint64_t flen = bdrv_child_length(node->file);
    if (s->offset > flen || (s->has_size && s->size > flen - s->offset)) {
        error_setg(errp, "offset/size reach beyond the end of '%s' (%llu bytes)", node->filename,
                   (unsigned long long)flen);
        free(s);
        return -1;
    }
    node->opaque = s;
    return 0;
}

static void raw_close(struct block_node *node)
{
    free(node->opaque);
    node->opaque = NULL;
}

static uint64_t raw_length(struct block_node *node)
{
    struct raw_state *s = node->opaque;
    if (s->has_size) {
        return s->size;
    }
    uint64_t flen = bdrv_child_length(node->file);
    return flen > s->offset ? flen - s->offset : 0;
}

static int raw_pread(struct block_node *node, uint64_t off, void *buf, size_t len,
                     struct error **errp)
{
    struct raw_state *s = node->opaque;
    return bdrv_child_pread(node->file, s->offset + off, buf, len, errp);
}

static int raw_pwrite(struct block_node *node, uint64_t off, const void *buf, size_t len,
                      struct error **errp)
{
    struct raw_state *s = node->opaque;
    return bdrv_child_pwrite(node->file, s->offset + off, buf, len, errp);
}

static int raw_flush(struct block_node *node, struct error **errp)
{
    return bdrv_child_flush(node->file, errp);
}

const struct block_driver block_driver_raw = {
        .name = "raw",
        .extra_opts = raw_opts,
        .open = raw_open,
        .close = raw_close,
        .length = raw_length,
        .pread = raw_pread,
        .pwrite = raw_pwrite,
        .flush = raw_flush,
};
