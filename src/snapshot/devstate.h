/*
 * The device-state section of a vmstate: one record per vCPU ("cpu/N"), one
 * for the VM-wide KVM state ("kvm") and one per device (its id).  The RAM
 * size and vCPU count are the header's (snapshot.c checks them).
 *
 * This is the one place that knows how the machine enumerates its state, so
 * loading can check the whole section against this VM (a missing, extra or
 * mismatched record is an error naming it) before anything is applied.
 */
#ifndef SNAPVM_SNAPSHOT_DEVSTATE_H
#define SNAPVM_SNAPSHOT_DEVSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/error.h"

struct machine;
struct vmstate_record;

/* Capture every record of a paused machine into `section`. */
int devstate_capture(struct machine *m, struct byte_buf *section, struct error **errp);

/*
 * Check that `records` fit this machine: a record for every vCPU and device,
 * none for anything else, the same record versions, and every record's
 * content as its loader will parse it (device_check, vcpu_state_check,
 * vm_state_check).  No side effects.  `where` names the snapshot.
 */
int devstate_check(struct machine *m, const struct vmstate_record *records, size_t count,
                   const char *where, struct error **errp);

/*
 * Apply checked records to a paused machine, in the order machine.h
 * prescribes.  Only KVM can still refuse something (an ioctl); the state
 * is then partly applied: put the backup back.
 */
int devstate_apply(struct machine *m, const struct vmstate_record *records, size_t count,
                   struct error **errp);

/* The machine's own state, taken before a load applies anything, to undo it. */
struct devstate_backup {
    struct byte_buf section;
    struct vmstate_record *records;
    size_t count;
};
int devstate_backup_take(struct machine *m, struct devstate_backup *b, struct error **errp);
int devstate_backup_restore(struct machine *m, struct devstate_backup *b, struct error **errp);
void devstate_backup_free(struct devstate_backup *b);

#endif
