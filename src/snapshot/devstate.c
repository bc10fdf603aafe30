/*
 * The device-state section of a vmstate (see devstate.h): capture, check
 * and apply, in one place so that the set of records a snapshot holds and
 * the set this VM expects are built by the same code.
 */
#include "snapshot/devstate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hw/device.h"
#include "machine/machine.h"
#include "snapshot/vmstate.h"

/*
 * Versions of the records whose format src/machine owns; bump together
 * with a change of vcpu_state_save()/vm_state_save().
 */
#define VCPU_STATE_VERSION 1
#define VM_STATE_VERSION   1
#define KVM_RECORD_ID      "kvm"

static void cpu_record_id(char *buf, size_t len, int index)
{
    snprintf(buf, len, "cpu/%d", index);
}

int devstate_capture(struct machine *m, struct byte_buf *section, struct error **errp)
{
    struct byte_buf payload;
    buf_init(&payload);
    int rc = -1;
    for (int i = 0; i < machine_vcpu_count(m); i++) {
        char id[32];
        cpu_record_id(id, sizeof(id), i);
        buf_reset(&payload);
        if (vcpu_state_save(m, i, &payload, errp) < 0) {
            goto out;
        }
        vmstate_record_add(section, id, VCPU_STATE_VERSION, payload.data, payload.len);
    }
    buf_reset(&payload);
    if (vm_state_save(m, &payload, errp) < 0) {
        goto out;
    }
    vmstate_record_add(section, KVM_RECORD_ID, VM_STATE_VERSION, payload.data, payload.len);
    for (struct device *d = machine_next_device(m, NULL); d; d = machine_next_device(m, d)) {
        buf_reset(&payload);
        device_save(d, &payload);
        vmstate_record_add(section, device_id(d), device_state_version(d), payload.data,
                           payload.len);
    }
    rc = 0;
out:
    buf_free(&payload);
    return rc;
}

static int expect_record(const struct vmstate_record *records, size_t count, const char *id,
                         uint32_t version, const char *where, struct error **errp)
{
    const struct vmstate_record *r = vmstate_record_find(records, count, id);
    if (!r) {
        error_setg(errp, "%s has no state for '%s', which this VM has", where, id);
        return -1;
    }
    if (r->version != version) {
        error_setg(errp, "%s holds version %u of the state of '%s'; this snapvm expects %u", where,
                   r->version, id, version);
        return -1;
    }
    return 0;
}

/* Is `id` one of the records this VM produces? */
static bool machine_has_record(struct machine *m, const char *id)
{
    if (!strcmp(id, KVM_RECORD_ID)) {
        return true;
    }
    for (int i = 0; i < machine_vcpu_count(m); i++) {
        char cpu[32];
        cpu_record_id(cpu, sizeof(cpu), i);
        if (!strcmp(id, cpu)) {
            return true;
        }
    }
    for (struct device *d = machine_next_device(m, NULL); d; d = machine_next_device(m, d)) {
        if (!strcmp(id, device_id(d))) {
            return true;
        }
    }
    return false;
}

/*
 * Every record's content, parsed the way its loader will parse it, with no
 * side effects: what a loader would refuse while applying (a FIFO count
 * beyond the FIFO, a queue size that is no power of two, a truncated vCPU
 * section) is refused here, before anything changes.
 */
static int check_contents(struct machine *m, const struct vmstate_record *records, size_t count,
                          const char *where, struct error **errp)
{
    const struct vmstate_record *r = vmstate_record_find(records, count, KVM_RECORD_ID);
    if (vm_state_check(m, r->data, r->len, errp) < 0) {
        error_prepend(errp, "%s: the VM-wide KVM state ('%s') is refused", where, KVM_RECORD_ID);
        return -1;
    }
    for (struct device *d = machine_next_device(m, NULL); d; d = machine_next_device(m, d)) {
        r = vmstate_record_find(records, count, device_id(d));
        if (device_check(d, r->data, r->len, errp) < 0) {
            error_prepend(errp, "%s: the state of device '%s' is refused", where, device_id(d));
            return -1;
        }
    }
    for (int i = 0; i < machine_vcpu_count(m); i++) {
        char id[32];
        cpu_record_id(id, sizeof(id), i);
        r = vmstate_record_find(records, count, id);
        if (vcpu_state_check(m, i, r->data, r->len, errp) < 0) {
            error_prepend(errp, "%s: the state of vCPU %d ('%s') is refused", where, i, id);
            return -1;
        }
    }
    return 0;
}

int devstate_check(struct machine *m, const struct vmstate_record *records, size_t count,
                   const char *where, struct error **errp)
{
    for (int i = 0; i < machine_vcpu_count(m); i++) {
        char id[32];
        cpu_record_id(id, sizeof(id), i);
        if (expect_record(records, count, id, VCPU_STATE_VERSION, where, errp) < 0) {
            return -1;
        }
    }
    if (expect_record(records, count, KVM_RECORD_ID, VM_STATE_VERSION, where, errp) < 0) {
        return -1;
    }
    for (struct device *d = machine_next_device(m, NULL); d; d = machine_next_device(m, d)) {
        if (expect_record(records, count, device_id(d), device_state_version(d), where, errp) < 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < count; i++) {
        if (!machine_has_record(m, records[i].id)) {
            error_setg(errp, "%s has state for device '%s', which this VM does not have", where,
                       records[i].id);
            return -1;
        }
    }
    return check_contents(m, records, count, where, errp);
}

static int apply_records(struct machine *m, const struct vmstate_record *records, size_t count,
                         struct error **errp)
{
    const struct vmstate_record *r;
    /*
     * The order machine.h prescribes: VM-wide state (PIC, IOAPIC, PIT,
     * clock) first; then the devices, which re-assert their interrupt lines
     * against the restored irqchip; the vCPUs last, so that their pending
     * events land on restored LAPICs.
     */
    r = vmstate_record_find(records, count, KVM_RECORD_ID);
    if (vm_state_load(m, r->data, r->len, errp) < 0) {
        return -1;
    }
    for (struct device *d = machine_next_device(m, NULL); d; d = machine_next_device(m, d)) {
        r = vmstate_record_find(records, count, device_id(d));
        if (device_load(d, r->data, r->len, errp) < 0) {
            error_prepend(errp, "loading the state of device '%s'", device_id(d));
            return -1;
        }
    }
    for (int i = 0; i < machine_vcpu_count(m); i++) {
        char id[32];
        cpu_record_id(id, sizeof(id), i);
        r = vmstate_record_find(records, count, id);
        if (vcpu_state_load(m, i, r->data, r->len, errp) < 0) {
            error_prepend(errp, "loading the state of vCPU %d", i);
            return -1;
        }
    }
    return 0;
}

int devstate_apply(struct machine *m, const struct vmstate_record *records, size_t count,
                   struct error **errp)
{
    return apply_records(m, records, count, errp);
}

int devstate_backup_take(struct machine *m, struct devstate_backup *b, struct error **errp)
{
    memset(b, 0, sizeof(*b));
    buf_init(&b->section);
    if (devstate_capture(m, &b->section, errp) < 0 ||
        vmstate_records_parse(b->section.data, b->section.len, &b->records, &b->count,
                              "the current state", errp) < 0) {
        devstate_backup_free(b);
        return -1;
    }
    return 0;
}

int devstate_backup_restore(struct machine *m, struct devstate_backup *b, struct error **errp)
{
    if (apply_records(m, b->records, b->count, errp) < 0) {
        error_prepend(errp, "putting the VM's own state back");
        return -1;
    }
    return 0;
}

void devstate_backup_free(struct devstate_backup *b)
{
    free(b->records);
    b->records = NULL;
    buf_free(&b->section);
}
