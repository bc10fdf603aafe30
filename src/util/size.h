/*
 * Human sizes as QEMU spells them: "4096", "64K", "128M", "8G", "1T".
 * Suffixes are binary (K = 1024).  Overflow, garbage and empty strings are
 * errors that quote the offending text.
 */
#ifndef SNAPVM_UTIL_SIZE_H
#define SNAPVM_UTIL_SIZE_H

#include <stddef.h>
#include <stdint.h>
#include "util/error.h"

/*
 * Parse `str` into bytes.  A bare number is multiplied by `default_unit`
 * (1 for most options; -m uses 1 MiB, as QEMU does).
 */
int size_parse(const char *str, uint64_t default_unit, uint64_t *out, struct error **errp);

/* Format bytes as "512 B", "64 KiB", "1.5 GiB" into buf. */
const char *size_format(uint64_t bytes, char *buf, size_t len);

#endif
