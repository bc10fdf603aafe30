/*
 * Character back ends for the serial port: stdio, null, file:PATH (output
 * only) and unix:PATH,server=on[,wait=off] (one client at a time; a new
 * client replaces the old one).  Input is read on the back end's own thread
 * and handed to the consumer only as fast as it has room (can_read), so no
 * byte is dropped when the guest is slow; chardev_wake() tells the thread
 * that room became available.
 */
#ifndef SNAPVM_HW_CHARDEV_H
#define SNAPVM_HW_CHARDEV_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct chardev;

struct chardev_handlers {
    size_t (*can_read)(void *opaque);
    void (*receive)(void *opaque, const uint8_t *buf, size_t len);
    void *opaque;
};

struct chardev *chardev_new(const char *spec, struct error **errp);
/* Start the input thread.  The handlers are called on that thread. */
int chardev_start(struct chardev *cd, const struct chardev_handlers *h, struct error **errp);
/* Write guest output; never blocks on a socket client (output is dropped). */
void chardev_write(struct chardev *cd, const uint8_t *buf, size_t len);
void chardev_wake(struct chardev *cd);
void chardev_free(struct chardev *cd);

#endif
