/*
 * The diagnostics sink (see log.h).  It owns where messages go: stderr, a
 * -D log file, or syslog.  One write per message so that lines from
 * different threads do not interleave; the sink is chosen before any thread
 * exists (command-line parsing, daemonizing) and never changes afterwards,
 * so it needs no lock.
 */
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "util/error.h"

enum sink {
    SINK_STDERR,
    SINK_FILE,
    SINK_SYSLOG,
};

static enum sink sink = SINK_STDERR;
static int file_fd = -1;

int log_open_file(const char *path, struct error **errp)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        error_setg_errno(errp, errno, "-D: cannot open log file '%s'", path);
        return -1;
    }
    /* fd 2 follows, so that stray writes to stderr are not lost either. */
    if (dup2(fd, STDERR_FILENO) < 0) {
        error_setg_errno(errp, errno, "-D: cannot redirect stderr to '%s'", path);
        close(fd);
        return -1;
    }
    file_fd = fd;
    sink = SINK_FILE;
    return 0;
}

void log_use_syslog(void)
{
    if (sink == SINK_FILE) {
        return;
    }
    openlog("snapvm", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    sink = SINK_SYSLOG;
}

static void log_v(int priority, const char *level, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (sink == SINK_SYSLOG) {
        syslog(priority, "%s%s", level, msg);
        return;
    }
    char line[1200];
    int n;
    if (sink == SINK_FILE) {
        /* A log file outlives the run: each line says when. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        char when[32];
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        n = snprintf(line, sizeof(line), "%s.%06ldZ snapvm[%d]: %s%s\n", when, ts.tv_nsec / 1000,
                     (int)getpid(), level, msg);
    } else {
        n = snprintf(line, sizeof(line), "snapvm: %s%s\n", level, msg);
    }
    if (n < 0) {
        return;
    }
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    /* One write(2): atomic for O_APPEND files, never split between threads. */
    if (write(sink == SINK_FILE ? file_fd : STDERR_FILENO, line, len) < 0) {
        /* nowhere left to report it */
    }
}

void log_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(LOG_ERR, "", fmt, ap);
    va_end(ap);
}

void log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(LOG_INFO, "", fmt, ap);
    va_end(ap);
}

void log_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(LOG_WARNING, "warning: ", fmt, ap);
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
    log_v(LOG_DEBUG, level, fmt, ap);
    va_end(ap);
}
