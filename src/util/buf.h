/*
 * A growable byte buffer, used to serialise device and vCPU state into
 * vmstate records.  Appends never fail (allocation failure aborts: a VMM that
 * cannot allocate a few KiB of metadata cannot go on anyway).  Multi-byte
 * integers are stored little-endian, whatever the host.
 */
#ifndef SNAPVM_UTIL_BUF_H
#define SNAPVM_UTIL_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

/* Little-endian integers of 1..8 bytes at p (the vmstate's byte order). */
static inline void le_put(uint8_t *p, uint64_t v, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint64_t le_get(const uint8_t *p, size_t bytes)
{
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

struct byte_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

void buf_init(struct byte_buf *b);
void buf_free(struct byte_buf *b);
void buf_reset(struct byte_buf *b);
void buf_append(struct byte_buf *b, const void *data, size_t len);
void buf_put_u8(struct byte_buf *b, uint8_t v);
void buf_put_u16(struct byte_buf *b, uint16_t v);
void buf_put_u32(struct byte_buf *b, uint32_t v);
void buf_put_u64(struct byte_buf *b, uint64_t v);

/*
 * A bounds-checked reader over a saved payload.  The first read past the end
 * sets `overrun`; later reads return zeros, so a loader can read a whole
 * record and check once with reader_finish(), which also rejects trailing
 * bytes.  `what` names the record in the error message.
 */
struct byte_reader {
    const uint8_t *data;
    size_t len;
    size_t pos;
    bool overrun;
};

void reader_init(struct byte_reader *r, const void *data, size_t len);
void reader_get(struct byte_reader *r, void *out, size_t len);
uint8_t reader_u8(struct byte_reader *r);
uint16_t reader_u16(struct byte_reader *r);
uint32_t reader_u32(struct byte_reader *r);
uint64_t reader_u64(struct byte_reader *r);
int reader_finish(struct byte_reader *r, const char *what, struct error **errp);

#endif
