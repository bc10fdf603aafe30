/*
 * Byte buffers and bounds-checked readers (see buf.h).
 */
#include "util/buf.h"

#include <stdlib.h>
#include <string.h>

void buf_init(struct byte_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void buf_free(struct byte_buf *b)
{
    free(b->data);
    buf_init(b);
}

void buf_reset(struct byte_buf *b)
{
    b->len = 0;
}

void buf_append(struct byte_buf *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len) {
            cap *= 2;
        }
        uint8_t *p = realloc(b->data, cap);
        if (!p) {
            abort();
        }
        b->data = p;
        b->cap = cap;
    }
    if (len) {
        memcpy(b->data + b->len, data, len);
    }
    b->len += len;
}

static void put_le(struct byte_buf *b, uint64_t v, size_t bytes)
{
    uint8_t tmp[8];
    le_put(tmp, v, bytes);
    buf_append(b, tmp, bytes);
}

void buf_put_u8(struct byte_buf *b, uint8_t v)
{
    put_le(b, v, 1);
}

void buf_put_u16(struct byte_buf *b, uint16_t v)
{
    put_le(b, v, 2);
}

void buf_put_u32(struct byte_buf *b, uint32_t v)
{
    put_le(b, v, 4);
}

void buf_put_u64(struct byte_buf *b, uint64_t v)
{
    put_le(b, v, 8);
}

void reader_init(struct byte_reader *r, const void *data, size_t len)
{
    r->data = data;
    r->len = len;
    r->pos = 0;
    r->overrun = false;
}

void reader_get(struct byte_reader *r, void *out, size_t len)
{
    if (r->overrun || len > r->len - r->pos) {
        r->overrun = true;
        memset(out, 0, len);
        return;
    }
    memcpy(out, r->data + r->pos, len);
    r->pos += len;
}

static uint64_t get_le(struct byte_reader *r, size_t bytes)
{
    uint8_t tmp[8];
    reader_get(r, tmp, bytes);
    return le_get(tmp, bytes);
}

uint8_t reader_u8(struct byte_reader *r)
{
    return (uint8_t)get_le(r, 1);
}

uint16_t reader_u16(struct byte_reader *r)
{
    return (uint16_t)get_le(r, 2);
}

uint32_t reader_u32(struct byte_reader *r)
{
    return (uint32_t)get_le(r, 4);
}

uint64_t reader_u64(struct byte_reader *r)
{
    return get_le(r, 8);
}

int reader_finish(struct byte_reader *r, const char *what, struct error **errp)
{
    if (r->overrun) {
        error_setg(errp, "%s: saved state is truncated (%zu bytes)", what, r->len);
        return -1;
    }
    if (r->pos != r->len) {
        error_setg(errp, "%s: saved state has %zu unexpected trailing bytes", what,
                   r->len - r->pos);
        return -1;
    }
    return 0;
}
