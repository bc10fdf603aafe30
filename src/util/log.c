/*
 * stderr logging (see log.h).  One fprintf per message so that lines from
 * different threads do not interleave.
 */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void log_v(const char *level, const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof(line), fmt, ap);
    fprintf(stderr, "snapvm: %s%s\n", level, line);
}

void log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v("", fmt, ap);
    va_end(ap);
}

void log_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v("warning: ", fmt, ap);
    va_end(ap);
}

void log_debug(const char *fmt, ...)
{
    const char *env = getenv("SNAPVM_DEBUG");
    if (!env || !strcmp(env, "0")) {
        return;
    }
    /* Monotonic timestamps, so that debug output can time a snapshot's steps. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char level[48];
    snprintf(level, sizeof(level), "debug: [%ld.%06ld] ", (long)ts.tv_sec, ts.tv_nsec / 1000);
    va_list ap;
    va_start(ap, fmt);
    log_v(level, fmt, ap);
    va_end(ap);
}
