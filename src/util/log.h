/*
 * Diagnostics: one sink for every message snapvm prints about itself.
 * By default the sink is stderr, each message prefixed with "snapvm: " so it
 * is easy to tell from guest serial output on stdio.  `-D FILE` makes it a
 * log file (appended, each line with a UTC timestamp), and `-daemonize`
 * without -D makes it syslog, so that a daemon's fatal errors never vanish
 * with its closed stderr.  Debug output is enabled with SNAPVM_DEBUG=1 in the
 * environment; everything else is always printed.
 */
#ifndef SNAPVM_UTIL_LOG_H
#define SNAPVM_UTIL_LOG_H

struct error;

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* -D FILE: append every message to FILE.  File descriptor 2 is pointed at
 * it too, so that anything written to stderr directly lands there as well. */
int log_open_file(const char *path, struct error **errp);

/* Send messages to syslog (facility daemon, ident "snapvm") from now on,
 * unless a log file is open.  For -daemonize, whose stderr is /dev/null. */
void log_use_syslog(void);

#endif
