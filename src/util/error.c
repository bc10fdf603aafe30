/*
 * Implementation of the error type declared in error.h: formatting, the
 * first-error-wins rule, and the mapping from classes to QMP names.
 */
#include "util/error.h"

#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *vformat(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) {
        return NULL;
    }
    return s;
}

static void error_setv(struct error **errp, enum error_class cls, const char *suffix,
                       const char *fmt, va_list ap)
{
    if (!errp || *errp) {
        return;
    }
    struct error *err = calloc(1, sizeof(*err));
    if (!err) {
        abort();
    }
    err->cls = cls;
    char *msg = vformat(fmt, ap);
    if (!msg) {
        abort();
    }
    if (suffix) {
        char *joined = NULL;
        if (asprintf(&joined, "%s: %s", msg, suffix) < 0) {
            abort();
        }
        free(msg);
        msg = joined;
    }
    err->message = msg;
    *errp = err;
}

void error_set(struct error **errp, enum error_class cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(errp, cls, NULL, fmt, ap);
    va_end(ap);
}

void error_setg(struct error **errp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(errp, ERROR_CLASS_GENERIC, NULL, fmt, ap);
    va_end(ap);
}

void error_setg_errno(struct error **errp, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(errp, ERROR_CLASS_GENERIC, strerror(errnum), fmt, ap);
    va_end(ap);
}

void error_prepend(struct error **errp, const char *fmt, ...)
{
    if (!errp || !*errp) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    char *prefix = vformat(fmt, ap);
    va_end(ap);
    char *joined = NULL;
    if (!prefix || asprintf(&joined, "%s: %s", prefix, (*errp)->message) < 0) {
        abort();
    }
    free(prefix);
    free((*errp)->message);
    (*errp)->message = joined;
}

void error_propagate(struct error **dst, struct error *src)
{
    if (!src) {
        return;
    }
    if (dst && !*dst) {
        *dst = src;
    } else {
        error_free(src);
    }
}

void error_free(struct error *err)
{
    if (err) {
        free(err->message);
        free(err);
    }
}

const char *error_class_name(enum error_class cls)
{
    switch (cls) {
    case ERROR_CLASS_GENERIC:
        return "GenericError";
    case ERROR_CLASS_COMMAND_NOT_FOUND:
        return "CommandNotFound";
    case ERROR_CLASS_DEVICE_NOT_ACTIVE:
        return "DeviceNotActive";
    case ERROR_CLASS_DEVICE_NOT_FOUND:
        return "DeviceNotFound";
    case ERROR_CLASS_KVM_MISSING_CAP:
        return "KVMMissingCap";
    }
    return "GenericError";
}

void error_report_and_free(struct error *err)
{
    if (err) {
        log_error("%s", err->message);
        error_free(err);
    }
}
