/*
 * Capture and restore of vCPU state and of VM-wide KVM state, for snapshots
 * and for system_reset (which reloads the state captured at creation).
 *
 * A vCPU record is a list of sections, each `u32 tag, u32 length, payload`,
 * the payload being the KVM structure as the ioctl returns it.  Loading
 * requires every section exactly once with exactly the size this host's KVM
 * uses, and names the section that does not match.  The VM record has the
 * same shape (PIC master, PIC slave, IOAPIC, PIT, kvmclock, snapvm's VM clock).
 *
 * The order of the SET ioctls matters and is explained where they are issued
 * (vcpu_state_load); GETs come in an order that makes the state consistent:
 * MP_STATE first, because reading it makes KVM process pending INIT/SIPI
 * events, which change the registers read afterwards.
 */
#include "machine/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define MSR_IA32_TSC          0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0

enum vcpu_section {
    SEC_MP_STATE = 1,
    SEC_REGS,
    SEC_SREGS,
    SEC_XCRS,
    SEC_XSAVE,
    SEC_MSRS,
    SEC_LAPIC,
    SEC_EVENTS,
    SEC_DEBUGREGS,
    SEC_TSC_DEADLINE,
    SEC_VCPU_MAX,
};

enum vm_section {
    SEC_PIC_MASTER = 1,
    SEC_PIC_SLAVE,
    SEC_IOAPIC,
    SEC_PIT,
    SEC_KVMCLOCK,
    SEC_VM_CLOCK,
    SEC_VM_MAX,
};

static const char *const vcpu_section_names[] = {
        [SEC_MP_STATE] = "MP_STATE",   [SEC_REGS] = "REGS",
        [SEC_SREGS] = "SREGS",         [SEC_XCRS] = "XCRS",
        [SEC_XSAVE] = "XSAVE",         [SEC_MSRS] = "MSRS",
        [SEC_LAPIC] = "LAPIC",         [SEC_EVENTS] = "EVENTS",
        [SEC_DEBUGREGS] = "DEBUGREGS", [SEC_TSC_DEADLINE] = "TSC_DEADLINE",
};

static const char *const vm_section_names[] = {
        [SEC_PIC_MASTER] = "PIC_MASTER", [SEC_PIC_SLAVE] = "PIC_SLAVE",
        [SEC_IOAPIC] = "IOAPIC",         [SEC_PIT] = "PIT2",
        [SEC_KVMCLOCK] = "KVMCLOCK",     [SEC_VM_CLOCK] = "VM_CLOCK",
};

static void put_section(struct byte_buf *out, uint32_t tag, const void *data, size_t len)
{
    buf_put_u32(out, tag);
    buf_put_u32(out, (uint32_t)len);
    buf_append(out, data, len);
}

/* Split a record into sections; each tag must appear exactly once. */
static int split_sections(const void *data, size_t len, const char *what, const char *const *names,
                          int max, const uint8_t **ptr, uint32_t *size, struct error **errp)
{
    struct byte_reader r;
    reader_init(&r, data, len);
    memset(ptr, 0, sizeof(*ptr) * (size_t)max);
    while (r.pos < r.len && !r.overrun) {
        uint32_t tag = reader_u32(&r);
        uint32_t n = reader_u32(&r);
        if (r.overrun || n > r.len - r.pos) {
            error_setg(errp, "%s: truncated section", what);
            return -1;
        }
        if (tag == 0 || tag >= (uint32_t)max) {
            error_setg(errp, "%s: unknown section %u", what, tag);
            return -1;
        }
        if (ptr[tag]) {
            error_setg(errp, "%s: section %s appears twice", what, names[tag]);
            return -1;
        }
        ptr[tag] = r.data + r.pos;
        size[tag] = n;
        r.pos += n;
    }
    if (reader_finish(&r, what, errp) < 0) {
        return -1;
    }
    for (int t = 1; t < max; t++) {
        if (!ptr[t]) {
            error_setg(errp, "%s: section %s is missing", what, names[t]);
            return -1;
        }
    }
    return 0;
}

static int check_size(const char *what, const char *name, uint32_t got, size_t want,
                      struct error **errp)
{
    if (got != want) {
        error_setg(errp, "%s: section %s has %u bytes, expected %zu", what, name, got, want);
        return -1;
    }
    return 0;
}

/* ---- probing (once per machine) ---- */

static int get_msr_index_list(struct machine *m, struct kvm_msr_list **out, struct error **errp)
{
    struct kvm_msr_list probe = {.nmsrs = 0};
    if (ioctl(m->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG) {
        KVM_FAIL(errp, "KVM_GET_MSR_INDEX_LIST");
        return -1;
    }
    struct kvm_msr_list *list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
    if (!list) {
        abort();
    }
    list->nmsrs = probe.nmsrs;
    if (ioctl(m->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
        free(list);
        KVM_FAIL(errp, "KVM_GET_MSR_INDEX_LIST");
        return -1;
    }
    *out = list;
    return 0;
}

static struct kvm_msrs *msrs_alloc(uint32_t n)
{
    struct kvm_msrs *k = calloc(1, sizeof(*k) + n * sizeof(struct kvm_msr_entry));
    if (!k) {
        abort();
    }
    k->nmsrs = n;
    return k;
}

/*
 * The MSRs to save: KVM's index list, minus those this vCPU cannot read,
 * with IA32_TSC first (KVM_SET_MSRS applies entries in order, and MSRs such
 * as TSC_ADJUST are interpreted against the TSC) and TSC_DEADLINE taken out
 * (it is restored separately, after the LAPIC).
 */
int vcpu_state_probe(struct machine *m, struct error **errp)
{
    struct kvm_msr_list *list;
    if (get_msr_index_list(m, &list, errp) < 0) {
        return -1;
    }
    m->msrs = calloc(list->nmsrs + 1, sizeof(uint32_t));
    if (!m->msrs) {
        abort();
    }
    m->nr_msrs = 0;
    for (uint32_t i = 0; i < list->nmsrs; i++) {
        if (list->indices[i] == MSR_IA32_TSC) {
            m->msrs[m->nr_msrs++] = MSR_IA32_TSC;
        }
    }
    for (uint32_t i = 0; i < list->nmsrs; i++) {
        uint32_t idx = list->indices[i];
        if (idx == MSR_IA32_TSC || idx == MSR_IA32_TSC_DEADLINE) {
            continue;
        }
        struct kvm_msrs *k = msrs_alloc(1);
        k->entries[0].index = idx;
        if (ioctl(m->vcpus[0].fd, KVM_GET_MSRS, k) == 1) {
            m->msrs[m->nr_msrs++] = idx;
        }
        free(k);
    }
    free(list);

    int xs = ioctl(m->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    m->xsave_size = xs > (int)sizeof(struct kvm_xsave) ? (size_t)xs : sizeof(struct kvm_xsave);
    return 0;
}

/* ---- vCPU ---- */

static int vcpu_get(struct vcpu *v, unsigned long req, const char *name, void *data,
                    struct error **errp)
{
    if (ioctl(v->fd, req, data) < 0) {
        error_setg_errno(errp, errno, "vCPU %d: %s", v->index, name);
        return -1;
    }
    return 0;
}

#define VCPU_IO(v, req, data, errp) vcpu_get(v, req, #req, data, errp)

static int save_msrs(struct machine *m, struct vcpu *v, struct byte_buf *out, struct error **errp)
{
    struct kvm_msrs *k = msrs_alloc(m->nr_msrs);
    for (uint32_t i = 0; i < m->nr_msrs; i++) {
        k->entries[i].index = m->msrs[i];
    }
    int n = ioctl(v->fd, KVM_GET_MSRS, k);
    if (n != (int)m->nr_msrs) {
        if (n < 0) {
            error_setg_errno(errp, errno, "vCPU %d: KVM_GET_MSRS", v->index);
        } else {
            error_setg(errp, "vCPU %d: KVM_GET_MSRS: cannot read MSR 0x%x", v->index, m->msrs[n]);
        }
        free(k);
        return -1;
    }
    put_section(out, SEC_MSRS, k->entries, m->nr_msrs * sizeof(k->entries[0]));
    free(k);

    struct kvm_msrs *d = msrs_alloc(1);
    d->entries[0].index = MSR_IA32_TSC_DEADLINE;
    if (ioctl(v->fd, KVM_GET_MSRS, d) != 1) {
        d->entries[0].data = 0; /* no TSC-deadline timer on this host */
    }
    put_section(out, SEC_TSC_DEADLINE, &d->entries[0], sizeof(d->entries[0]));
    free(d);
    return 0;
}

int vcpu_state_save(struct machine *m, int index, struct byte_buf *out, struct error **errp)
{
    if (index < 0 || index >= m->nr_vcpus) {
        error_setg(errp, "no vCPU %d", index);
        return -1;
    }
    struct vcpu *v = &m->vcpus[index];
    struct kvm_mp_state mp;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xcrs xcrs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_debugregs dregs;
    void *xsave = calloc(1, m->xsave_size);
    if (!xsave) {
        abort();
    }
    int rc = -1;
    /* MP_STATE first: reading it applies pending INIT/SIPI (see top). */
    if (VCPU_IO(v, KVM_GET_MP_STATE, &mp, errp) < 0 || VCPU_IO(v, KVM_GET_REGS, &regs, errp) < 0 ||
        VCPU_IO(v, KVM_GET_SREGS, &sregs, errp) < 0 || VCPU_IO(v, KVM_GET_XCRS, &xcrs, errp) < 0 ||
        vcpu_get(v, m->xsave_size > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE,
                 "KVM_GET_XSAVE", xsave, errp) < 0 ||
        VCPU_IO(v, KVM_GET_LAPIC, &lapic, errp) < 0 ||
        VCPU_IO(v, KVM_GET_VCPU_EVENTS, &events, errp) < 0 ||
        VCPU_IO(v, KVM_GET_DEBUGREGS, &dregs, errp) < 0) {
        goto out;
    }
    put_section(out, SEC_MP_STATE, &mp, sizeof(mp));
    put_section(out, SEC_REGS, &regs, sizeof(regs));
    put_section(out, SEC_SREGS, &sregs, sizeof(sregs));
    put_section(out, SEC_XCRS, &xcrs, sizeof(xcrs));
    put_section(out, SEC_XSAVE, xsave, m->xsave_size);
    put_section(out, SEC_LAPIC, &lapic, sizeof(lapic));
    put_section(out, SEC_EVENTS, &events, sizeof(events));
    put_section(out, SEC_DEBUGREGS, &dregs, sizeof(dregs));
    rc = save_msrs(m, v, out, errp);
out:
    free(xsave);
    return rc;
}

static int set_msrs(struct vcpu *v, const uint8_t *data, uint32_t len, const char *what,
                    struct error **errp)
{
    uint32_t n = len / sizeof(struct kvm_msr_entry);
    if (len % sizeof(struct kvm_msr_entry)) {
        error_setg(errp, "%s: section MSRS has %u bytes, not a whole number of entries", what, len);
        return -1;
    }
    struct kvm_msrs *k = msrs_alloc(n);
    memcpy(k->entries, data, len);
    int done = ioctl(v->fd, KVM_SET_MSRS, k);
    int rc = 0;
    if (done != (int)n) {
        if (done < 0) {
            error_setg_errno(errp, errno, "vCPU %d: KVM_SET_MSRS", v->index);
        } else {
            error_setg(errp, "vCPU %d: KVM_SET_MSRS: MSR 0x%x was refused", v->index,
                       k->entries[done].index);
        }
        rc = -1;
    }
    free(k);
    return rc;
}

/* Split a vCPU record and check every section's size: no side effects. */
static int parse_vcpu(struct machine *m, const void *data, size_t len, const char *what,
                      const uint8_t **p, uint32_t *n, struct error **errp)
{
    if (split_sections(data, len, what, vcpu_section_names, SEC_VCPU_MAX, p, n, errp) < 0) {
        return -1;
    }
    if (check_size(what, "MP_STATE", n[SEC_MP_STATE], sizeof(struct kvm_mp_state), errp) ||
        check_size(what, "REGS", n[SEC_REGS], sizeof(struct kvm_regs), errp) ||
        check_size(what, "SREGS", n[SEC_SREGS], sizeof(struct kvm_sregs), errp) ||
        check_size(what, "XCRS", n[SEC_XCRS], sizeof(struct kvm_xcrs), errp) ||
        check_size(what, "XSAVE", n[SEC_XSAVE], m->xsave_size, errp) ||
        check_size(what, "LAPIC", n[SEC_LAPIC], sizeof(struct kvm_lapic_state), errp) ||
        check_size(what, "EVENTS", n[SEC_EVENTS], sizeof(struct kvm_vcpu_events), errp) ||
        check_size(what, "DEBUGREGS", n[SEC_DEBUGREGS], sizeof(struct kvm_debugregs), errp) ||
        check_size(what, "TSC_DEADLINE", n[SEC_TSC_DEADLINE], sizeof(struct kvm_msr_entry), errp)) {
        return -1;
    }
    if (n[SEC_MSRS] % sizeof(struct kvm_msr_entry)) {
        error_setg(errp, "%s: section MSRS has %u bytes, not a whole number of entries", what,
                   n[SEC_MSRS]);
        return -1;
    }
    return 0;
}

static int vcpu_what(struct machine *m, int index, char *what, size_t len, struct error **errp)
{
    snprintf(what, len, "vcpu%d", index);
    if (index < 0 || index >= m->nr_vcpus) {
        error_setg(errp, "%s: no such vCPU (the machine has %d)", what, m->nr_vcpus);
        return -1;
    }
    return 0;
}

int vcpu_state_check(struct machine *m, int index, const void *data, size_t len,
                     struct error **errp)
{
    char what[32];
    const uint8_t *p[SEC_VCPU_MAX];
    uint32_t n[SEC_VCPU_MAX];
    return vcpu_what(m, index, what, sizeof(what), errp) < 0
                   ? -1
                   : parse_vcpu(m, data, len, what, p, n, errp);
}

int vcpu_state_load(struct machine *m, int index, const void *data, size_t len, struct error **errp)
{
    char what[32];
    const uint8_t *p[SEC_VCPU_MAX];
    uint32_t n[SEC_VCPU_MAX];
    if (vcpu_what(m, index, what, sizeof(what), errp) < 0 ||
        parse_vcpu(m, data, len, what, p, n, errp) < 0) {
        return -1;
    }
    struct vcpu *v = &m->vcpus[index];
    /* Copies: the record may be unaligned, and the ioctls take non-const. */
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    struct kvm_xcrs xcrs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_debugregs dregs;
    struct kvm_mp_state mp;
    memcpy(&sregs, p[SEC_SREGS], sizeof(sregs));
    memcpy(&regs, p[SEC_REGS], sizeof(regs));
    memcpy(&xcrs, p[SEC_XCRS], sizeof(xcrs));
    memcpy(&lapic, p[SEC_LAPIC], sizeof(lapic));
    memcpy(&events, p[SEC_EVENTS], sizeof(events));
    memcpy(&dregs, p[SEC_DEBUGREGS], sizeof(dregs));
    memcpy(&mp, p[SEC_MP_STATE], sizeof(mp));
    void *xsave = malloc(m->xsave_size);
    if (!xsave) {
        abort();
    }
    memcpy(xsave, p[SEC_XSAVE], m->xsave_size);
    int rc = -1;

    /* 1. SREGS first: CR0/CR4/EFER decide how everything else is read (long
     *    mode, PAE), and its apic_base field sets IA32_APIC_BASE, which
     *    enables the LAPIC and picks xAPIC or x2APIC before KVM_SET_LAPIC. */
    if (VCPU_IO(v, KVM_SET_SREGS, &sregs, errp) < 0) {
        goto out;
    }
    /* 2. General registers, RIP, RFLAGS. */
    if (VCPU_IO(v, KVM_SET_REGS, &regs, errp) < 0) {
        goto out;
    }
    /* 3. XCR0 before the XSAVE area, so the area's components are enabled
     *    in the guest's XCR0 when KVM loads them. */
    if (VCPU_IO(v, KVM_SET_XCRS, &xcrs, errp) < 0 ||
        vcpu_get(v, KVM_SET_XSAVE, "KVM_SET_XSAVE", xsave, errp) < 0) {
        goto out;
    }
    /* 4. MSRs, IA32_TSC first (see vcpu_state_probe). */
    if (set_msrs(v, p[SEC_MSRS], n[SEC_MSRS], what, errp) < 0) {
        goto out;
    }
    /* 5. LAPIC after APIC_BASE (step 1): in x2APIC mode KVM checks the ID
     *    register against the vCPU id, and a disabled APIC drops the write. */
    if (VCPU_IO(v, KVM_SET_LAPIC, &lapic, errp) < 0) {
        goto out;
    }
    /* 6. TSC_DEADLINE after the LAPIC: KVM ignores writes to it unless the
     *    LVT timer is already in TSC-deadline mode, and after the TSC
     *    (step 4), since the deadline is an absolute TSC value. */
    {
        struct kvm_msr_entry e;
        memcpy(&e, p[SEC_TSC_DEADLINE], sizeof(e));
        if (e.data && set_msrs(v, (const uint8_t *)&e, sizeof(e), what, errp) < 0) {
            goto out;
        }
    }
    /* 7. Pending exceptions, interrupts and NMIs after SREGS and LAPIC, which
     *    would otherwise reset or re-evaluate them. */
    events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    if (VCPU_IO(v, KVM_SET_VCPU_EVENTS, &events, errp) < 0) {
        goto out;
    }
    if (VCPU_IO(v, KVM_SET_DEBUGREGS, &dregs, errp) < 0) {
        goto out;
    }
    /* 8. MP_STATE last: a halted vCPU must end up halted (and an AP still
     *    waiting for SIPI must keep waiting), whatever the steps above did. */
    if (VCPU_IO(v, KVM_SET_MP_STATE, &mp, errp) < 0) {
        goto out;
    }
    rc = 0;
out:
    free(xsave);
    return rc;
}

/* ---- VM-wide ---- */

static int vm_ioctl(struct machine *m, unsigned long req, const char *name, void *data,
                    struct error **errp)
{
    if (ioctl(m->vm_fd, req, data) < 0) {
        KVM_FAIL(errp, name);
        return -1;
    }
    return 0;
}

int vm_state_save(struct machine *m, struct byte_buf *out, struct error **errp)
{
    struct kvm_irqchip chips[3];
    for (int i = 0; i < 3; i++) {
        memset(&chips[i], 0, sizeof(chips[i]));
        chips[i].chip_id = (uint32_t)i; /* PIC master, PIC slave, IOAPIC */
        if (vm_ioctl(m, KVM_GET_IRQCHIP, "KVM_GET_IRQCHIP", &chips[i], errp) < 0) {
            return -1;
        }
    }
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
    memset(&clock, 0, sizeof(clock));
    if (vm_ioctl(m, KVM_GET_PIT2, "KVM_GET_PIT2", &pit, errp) < 0 ||
        vm_ioctl(m, KVM_GET_CLOCK, "KVM_GET_CLOCK", &clock, errp) < 0) {
        return -1;
    }
    uint64_t vm_clock = machine_vm_clock_ns(m);
    put_section(out, SEC_PIC_MASTER, &chips[0], sizeof(chips[0]));
    put_section(out, SEC_PIC_SLAVE, &chips[1], sizeof(chips[1]));
    put_section(out, SEC_IOAPIC, &chips[2], sizeof(chips[2]));
    put_section(out, SEC_PIT, &pit, sizeof(pit));
    put_section(out, SEC_KVMCLOCK, &clock.clock, sizeof(clock.clock));
    put_section(out, SEC_VM_CLOCK, &vm_clock, sizeof(vm_clock));
    return 0;
}

/* Split the VM-wide record and check every section: no side effects. */
static int parse_vm(const void *data, size_t len, const uint8_t **p, uint32_t *n,
                    struct error **errp)
{
    const char *what = "vm";
    if (split_sections(data, len, what, vm_section_names, SEC_VM_MAX, p, n, errp) < 0) {
        return -1;
    }
    if (check_size(what, "PIC_MASTER", n[SEC_PIC_MASTER], sizeof(struct kvm_irqchip), errp) ||
        check_size(what, "PIC_SLAVE", n[SEC_PIC_SLAVE], sizeof(struct kvm_irqchip), errp) ||
        check_size(what, "IOAPIC", n[SEC_IOAPIC], sizeof(struct kvm_irqchip), errp) ||
        check_size(what, "PIT2", n[SEC_PIT], sizeof(struct kvm_pit_state2), errp) ||
        check_size(what, "KVMCLOCK", n[SEC_KVMCLOCK], sizeof(uint64_t), errp) ||
        check_size(what, "VM_CLOCK", n[SEC_VM_CLOCK], sizeof(uint64_t), errp)) {
        return -1;
    }
    static const int chips[3] = {SEC_PIC_MASTER, SEC_PIC_SLAVE, SEC_IOAPIC};
    for (int i = 0; i < 3; i++) {
        struct kvm_irqchip chip;
        memcpy(&chip, p[chips[i]], sizeof(chip));
        if (chip.chip_id != (uint32_t)i) {
            error_setg(errp, "%s: section %s is for irqchip %u", what, vm_section_names[chips[i]],
                       chip.chip_id);
            return -1;
        }
    }
    return 0;
}

int vm_state_check(struct machine *m, const void *data, size_t len, struct error **errp)
{
    (void)m;
    const uint8_t *p[SEC_VM_MAX];
    uint32_t n[SEC_VM_MAX];
    return parse_vm(data, len, p, n, errp);
}

int vm_state_load(struct machine *m, const void *data, size_t len, struct error **errp)
{
    const uint8_t *p[SEC_VM_MAX];
    uint32_t n[SEC_VM_MAX];
    if (parse_vm(data, len, p, n, errp) < 0) {
        return -1;
    }
    /* The interrupt controllers first: the PIT, restored next, starts
     * counting at once and delivers IRQ 0 into whatever PIC state is there. */
    static const int order[3] = {SEC_PIC_MASTER, SEC_PIC_SLAVE, SEC_IOAPIC};
    for (int i = 0; i < 3; i++) {
        struct kvm_irqchip chip;
        memcpy(&chip, p[order[i]], sizeof(chip));
        if (vm_ioctl(m, KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP", &chip, errp) < 0) {
            return -1;
        }
    }
    struct kvm_pit_state2 pit;
    memcpy(&pit, p[SEC_PIT], sizeof(pit));
    if (vm_ioctl(m, KVM_SET_PIT2, "KVM_SET_PIT2", &pit, errp) < 0) {
        return -1;
    }
    /* kvmclock last among the KVM state: it is the guest's time base. */
    struct kvm_clock_data clock;
    memset(&clock, 0, sizeof(clock));
    memcpy(&clock.clock, p[SEC_KVMCLOCK], sizeof(clock.clock));
    if (vm_ioctl(m, KVM_SET_CLOCK, "KVM_SET_CLOCK", &clock, errp) < 0) {
        return -1;
    }
    uint64_t vm_clock;
    memcpy(&vm_clock, p[SEC_VM_CLOCK], sizeof(vm_clock));
    machine_set_vm_clock_ns(m, vm_clock);
    return 0;
}
