/*
 * Freestanding helpers of the built-in guest: the memory functions the
 * compiler may call, the fill/checksum functions (their Python twins live in
 * tests/functional/vm.py, keep them in step), formatting and number parsing.
 */
#include "guest.h"

void *memset(void *s, int c, size_t n)
{
    uint8_t *p = s;
    while (n--) {
        *p++ = (uint8_t)c;
    }
    return s;
}

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *dp = d;
    const uint8_t *sp = s;
    while (n--) {
        *dp++ = *sp++;
    }
    return d;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n]) {
        n++;
    }
    return n;
}

int streq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

/* The splitmix64 finaliser. */
uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Word `index` of a region filled from `seed`: splitmix64's index-th output. */
uint64_t fill_word(uint64_t seed, uint64_t index)
{
    return mix64(seed + (index + 1) * 0x9e3779b97f4a7c15ULL);
}

/*
 * Checksum: the sum over all words of (word ^ index*K1) * K2, finalised with
 * the word count.  Position-dependent (a page at the wrong place changes it)
 * yet cheap enough to run over GiBs in ring 3.
 */
uint64_t sum_word(uint64_t word, uint64_t index)
{
    return (word ^ (index * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;
}

uint64_t sum_final(uint64_t acc, uint64_t nwords)
{
    return mix64(acc ^ nwords);
}

void fmt_str(char *buf, size_t cap, size_t *pos, const char *s)
{
    while (*s && *pos + 1 < cap) {
        buf[(*pos)++] = *s++;
    }
    buf[*pos] = 0;
}

void fmt_dec(char *buf, size_t cap, size_t *pos, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && *pos + 1 < cap) {
        buf[(*pos)++] = tmp[--n];
    }
    buf[*pos] = 0;
}

void fmt_hex16(char *buf, size_t cap, size_t *pos, uint64_t v)
{
    for (int i = 15; i >= 0 && *pos + 1 < cap; i--) {
        buf[(*pos)++] = "0123456789abcdef"[(v >> (i * 4)) & 0xf];
    }
    buf[*pos] = 0;
}

/* Decimal, or hexadecimal with 0x; rejects empty strings, junk and overflow. */
bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    unsigned base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9') {
            d = (unsigned)(*s - '0');
        } else if (base == 16 && *s >= 'a' && *s <= 'f') {
            d = (unsigned)(*s - 'a' + 10);
        } else if (base == 16 && *s >= 'A' && *s <= 'F') {
            d = (unsigned)(*s - 'A' + 10);
        } else {
            return false;
        }
        if (v > (UINT64_MAX - d) / base) {
            return false;
        }
        v = v * base + d;
    }
    *out = v;
    return true;
}
