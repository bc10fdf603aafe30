/*
 * Size parsing and formatting (see size.h).
 */
#include "util/size.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static int suffix_shift(char c)
{
    switch (c) {
    case 'b':
    case 'B':
        return 0;
    case 'k':
    case 'K':
        return 10;
    case 'm':
    case 'M':
        return 20;
    case 'g':
    case 'G':
        return 30;
    case 't':
    case 'T':
        return 40;
    case 'p':
    case 'P':
        return 50;
    case 'e':
    case 'E':
        return 60;
    }
    return -1;
}

int size_parse(const char *str, uint64_t default_unit, uint64_t *out, struct error **errp)
{
    if (!str || !*str || !isdigit((unsigned char)str[0])) {
        error_setg(errp, "invalid size '%s': expected a number with an optional K/M/G/T suffix",
                   str ? str : "");
        return -1;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long value = strtoull(str, &end, 10);
    if (errno == ERANGE) {
        error_setg(errp, "invalid size '%s': too large", str);
        return -1;
    }
    uint64_t unit = default_unit;
    if (*end) {
        int shift = suffix_shift(*end);
        if (shift < 0 || end[1] != '\0') {
            error_setg(errp, "invalid size '%s': unknown suffix '%s' (use K, M, G or T)", str, end);
            return -1;
        }
        unit = 1ULL << shift;
    }
    if (unit && value > UINT64_MAX / unit) {
        error_setg(errp, "invalid size '%s': too large", str);
        return -1;
    }
    *out = value * unit;
    return 0;
}

const char *size_format(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    int i = 0;
    double v = (double)bytes;
    while (v >= 1024.0 && i < 6) {
        v /= 1024.0;
        i++;
    }
    if (i == 0) {
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
    } else {
        snprintf(buf, len, "%.3g %s", v, units[i]);
    }
    return buf;
}
