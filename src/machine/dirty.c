/*
 * Dirty-page tracking of guest RAM, for a live snapshot save: the guest
 * keeps running while RAM is written out, and pages it dirties are written
 * again.  Two sources are merged into one bitmap indexed like machine_ram():
 *   - KVM's dirty log (KVM_MEM_LOG_DIRTY_PAGES on both memory slots, read
 *     and cleared with KVM_GET_DIRTY_LOG) for writes by the guest's CPUs;
 *   - a bitmap the VMM's own device models set when they write guest RAM
 *     (virtio-blk reads, used rings), which KVM cannot see.
 */
#include "machine/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define PAGE_SHIFT 12

static uint64_t nr_pages(uint64_t bytes)
{
    return (bytes + (1ULL << PAGE_SHIFT) - 1) >> PAGE_SHIFT;
}

size_t machine_dirty_bitmap_words(struct machine *m)
{
    return (size_t)((nr_pages(m->ram.size) + 63) / 64);
}

static int set_logging(struct machine *m, bool on, struct error **errp)
{
    uint64_t low = m->ram.low_size, high = m->ram.size - m->ram.low_size;
    struct kvm_userspace_memory_region r = {
            .slot = 0,
            .flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0,
            .guest_phys_addr = 0,
            .memory_size = low,
            .userspace_addr = (uint64_t)(uintptr_t)m->ram.host,
    };
    /* Changing only the flags of an existing slot turns logging on or off
     * without remapping the memory. */
    if (ioctl(m->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
        KVM_FAIL(errp, "KVM_SET_USER_MEMORY_REGION");
        return -1;
    }
    if (high) {
        r.slot = 1;
        r.guest_phys_addr = GUEST_HIGH_RAM_BASE;
        r.memory_size = high;
        r.userspace_addr = (uint64_t)(uintptr_t)(m->ram.host + low);
        if (ioctl(m->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
            KVM_FAIL(errp, "KVM_SET_USER_MEMORY_REGION");
            return -1;
        }
    }
    return 0;
}

int machine_dirty_log_start(struct machine *m, struct error **errp)
{
    if (m->ram.dirty) {
        error_setg(errp, "dirty-page tracking is already on");
        return -1;
    }
    uint64_t *vmm = calloc(machine_dirty_bitmap_words(m), sizeof(uint64_t));
    if (!vmm) {
        abort();
    }
    if (set_logging(m, true, errp) < 0) {
        free(vmm);
        return -1;
    }
    __atomic_store_n(&m->ram.dirty, vmm, __ATOMIC_RELEASE);
    return 0;
}

static int get_slot_log(struct machine *m, uint32_t slot, uint64_t pages, uint64_t *out,
                        struct error **errp)
{
    struct kvm_dirty_log log = {.slot = slot};
    log.dirty_bitmap = out;
    (void)pages;
    if (ioctl(m->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
        KVM_FAIL(errp, "KVM_GET_DIRTY_LOG");
        return -1;
    }
    return 0;
}

int machine_dirty_log_sync(struct machine *m, uint64_t *bitmap, struct error **errp)
{
    uint64_t *vmm = m->ram.dirty;
    if (!vmm) {
        error_setg(errp, "dirty-page tracking is off");
        return -1;
    }
    size_t words = machine_dirty_bitmap_words(m);
    uint64_t low_pages = nr_pages(m->ram.low_size);
    uint64_t high_pages = nr_pages(m->ram.size) - low_pages;
    uint64_t *tmp = calloc((low_pages + 63) / 64 + 1, sizeof(uint64_t));
    if (!tmp) {
        abort();
    }
    int rc = get_slot_log(m, 0, low_pages, tmp, errp);
    for (uint64_t i = 0; rc == 0 && i < (low_pages + 63) / 64; i++) {
        bitmap[i] |= tmp[i];
    }
    if (rc == 0 && high_pages) {
        uint64_t *t2 = calloc((high_pages + 63) / 64, sizeof(uint64_t));
        if (!t2) {
            abort();
        }
        rc = get_slot_log(m, 1, high_pages, t2, errp);
        /* Page p of the high slot is page low_pages + p of machine_ram():
         * a word at a time (a bit at a time took milliseconds at 8 GiB). */
        uint64_t shift = low_pages % 64, base = low_pages / 64;
        for (uint64_t w = 0; rc == 0 && w < (high_pages + 63) / 64; w++) {
            if (!t2[w]) {
                continue;
            }
            bitmap[base + w] |= t2[w] << shift;
            if (shift && base + w + 1 < words) {
                bitmap[base + w + 1] |= t2[w] >> (64 - shift);
            }
        }
        free(t2);
    }
    free(tmp);
    /* A plain look first: an atomic exchange on each of the 32768 words
     * of 8 GiB costs a third of a millisecond, and most are zero.  A bit
     * set after the look is taken by the next sync. */
    for (size_t i = 0; rc == 0 && i < words; i++) {
        if (__atomic_load_n(&vmm[i], __ATOMIC_RELAXED)) {
            bitmap[i] |= __atomic_exchange_n(&vmm[i], 0, __ATOMIC_ACQ_REL);
        }
    }
    return rc;
}

void machine_dirty_log_stop(struct machine *m)
{
    uint64_t *vmm = m->ram.dirty;
    if (!vmm) {
        return;
    }
    struct error *err = NULL;
    if (set_logging(m, false, &err) < 0) {
        error_report_and_free(err);
    }
    /* Devices write guest RAM (and this bitmap) only on vCPU threads, so
     * with every vCPU out of the way nobody can still hold the pointer. */
    machine_pause_vcpus(m, NULL);
    __atomic_store_n(&m->ram.dirty, NULL, __ATOMIC_RELEASE);
    machine_resume_vcpus(m);
    free(vmm);
}
