/*
 * Bitmaps of pages (one bit per page, in uint64_t words, bit i of word w
 * is page 64 * w + i), as the snapshot layer keeps them: which pages are
 * zero, stored, dirty, packed.  A word at a time: these run over every
 * page of RAM, some of them with the guest paused.
 */
#ifndef SNAPVM_UTIL_BITMAP_H
#define SNAPVM_UTIL_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

static inline bool bitmap_test(const uint64_t *map, uint64_t i)
{
    return map[i / 64] >> (i % 64) & 1;
}

/* Bits set in map[from, to) (stop_at_one: 1 as soon as one is found). */
static inline uint64_t bitmap_count(const uint64_t *map, uint64_t from, uint64_t to,
                                    bool stop_at_one)
{
    uint64_t n = 0;
    while (from < to) {
        uint64_t b = from % 64, len = 64 - b < to - from ? 64 - b : to - from;
        uint64_t mask = (len == 64 ? ~0ull : (1ull << len) - 1) << b;
        n += (uint64_t)__builtin_popcountll(map[from / 64] & mask);
        if (n && stop_at_one) {
            return 1;
        }
        from += len;
    }
    return n;
}

/* Bits [a, b) of map set to v. */
static inline void bitmap_assign(uint64_t *map, uint64_t a, uint64_t b, bool v)
{
    while (a < b) {
        uint64_t n = 64 - a % 64 < b - a ? 64 - a % 64 : b - a;
        uint64_t mask = (n == 64 ? ~0ull : (1ull << n) - 1) << (a % 64);
        map[a / 64] = v ? map[a / 64] | mask : map[a / 64] & ~mask;
        a += n;
    }
}

#endif
