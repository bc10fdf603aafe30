/*
 * Diagnostics on stderr.  Debug output is enabled with SNAPVM_DEBUG=1 in the
 * environment; everything else is always printed.  Messages are prefixed with
 * "snapvm: " so they are easy to tell from guest serial output on stdio.
 */
#ifndef SNAPVM_UTIL_LOG_H
#define SNAPVM_UTIL_LOG_H

void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
