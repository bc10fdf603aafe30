/*
 * The one error type of snapvm.
 *
 * Every layer (block, machine, hw, snapshot, monitor) reports failure through
 * a `struct error **errp` out-parameter: a class (the QMP error class it maps
 * to) and a human-readable message that names the culprit.  A NULL errp means
 * "the caller does not care"; a set *errp is never overwritten, so the first
 * (innermost) failure is the one that reaches the user.
 */
#ifndef SNAPVM_UTIL_ERROR_H
#define SNAPVM_UTIL_ERROR_H

#include <stdarg.h>

enum error_class {
    ERROR_CLASS_GENERIC,           /* "GenericError" */
    ERROR_CLASS_COMMAND_NOT_FOUND, /* "CommandNotFound" */
    ERROR_CLASS_DEVICE_NOT_ACTIVE, /* "DeviceNotActive" */
    ERROR_CLASS_DEVICE_NOT_FOUND,  /* "DeviceNotFound" */
    ERROR_CLASS_KVM_MISSING_CAP,   /* "KVMMissingCap" */
};

struct error {
    enum error_class cls;
    char *message;
};

/* Set *errp (if errp is non-NULL and *errp is still NULL). */
void error_set(struct error **errp, enum error_class cls, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* Shorthand for a GenericError. */
void error_setg(struct error **errp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* GenericError whose message ends in ": strerror(errnum)". */
void error_setg_errno(struct error **errp, int errnum, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* Put "prefix: " in front of an already set error's message (no-op if none). */
void error_prepend(struct error **errp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Move src into *dst (or free it if dst is NULL or already set). */
void error_propagate(struct error **dst, struct error *src);
void error_free(struct error *err);
/* The QMP name of an error class, e.g. "GenericError". */
const char *error_class_name(enum error_class cls);
/* Print "snapvm: <message>" on stderr and free the error. */
void error_report_and_free(struct error *err);

#endif
