/*
 * vCPUs: creation (CPUID: KVM's supported set, passed through with the
 * vCPU's APIC id, less what this host cannot run; KVM's own leaves at
 * 0x40000000, which announce kvmclock to a Linux guest, come with it), one
 * thread per vCPU running the KVM_RUN loop,
 * dispatch of I/O and MMIO exits to the bus, and the parking protocol that
 * machine_pause_vcpus() relies on.
 *
 * Parking: a vCPU parks only after a KVM_RUN that returned EINTR, never
 * right after an I/O or MMIO exit.  KVM completes an I/O or MMIO instruction
 * on the *next* KVM_RUN, so a vCPU parked between the exit and that call
 * would have a half-executed instruction that no state ioctl can capture.
 * The kicker sets kvm_run.immediate_exit before signalling, so the next
 * KVM_RUN completes the pending access and returns EINTR at once; and a
 * signal that arrives while the thread is outside KVM_RUN is not lost.
 */
#include "machine/internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <asm/kvm_para.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"

#define SIG_KICK SIGUSR1

#define CPUID_1_ECX_CX16 (1u << 13)

static void kick_handler(int sig)
{
    (void)sig; /* only there to interrupt KVM_RUN with EINTR */
}

static struct kvm_cpuid2 *get_supported_cpuid(struct machine *m, struct error **errp)
{
    for (int n = 64; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (size_t)n * sizeof(c->entries[0]));
        if (!c) {
            abort();
        }
        c->nent = (uint32_t)n;
        if (ioctl(m->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
            return c;
        }
        int e = errno;
        free(c);
        if (e != E2BIG) {
            errno = e;
            KVM_FAIL(errp, "KVM_GET_SUPPORTED_CPUID");
            return NULL;
        }
    }
    error_setg(errp, "KVM_GET_SUPPORTED_CPUID: too many entries");
    return NULL;
}

static int setup_cpuid(struct machine *m, struct vcpu *v, struct error **errp)
{
    struct kvm_cpuid2 *c = get_supported_cpuid(m, errp);
    if (!c) {
        return -1;
    }
    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        if (e->function == 1) {
            /* Initial APIC ID in EBX[31:24] must match the vCPU id (and the
             * MP table's processor entries, mptable.c). */
            e->ebx = (e->ebx & 0x00ffffffu) | ((uint32_t)v->index << 24);
            /* No CMPXCHG16B: the PVM host's CPL0 emulator lacks it, and a
             * guest kernel that sees the bit uses it (Linux does).  Guests
             * do without it on any host. */
            e->ecx &= ~CPUID_1_ECX_CX16;
        } else if (e->function == KVM_CPUID_FEATURES) {
            /* No paravirtual feature that works by hypercall: on the PVM
             * host a guest's hypercall never completes (Linux's PV
             * send-IPI spun on its vmcall with a lock held, and the other
             * CPU on that lock).  They are optimizations; Linux falls back
             * to plain IPIs and spinlocks.  kvmclock (MSRs) stays. */
            e->eax &= ~((1u << KVM_FEATURE_PV_UNHALT) | (1u << KVM_FEATURE_PV_SEND_IPI) |
                        (1u << KVM_FEATURE_PV_SCHED_YIELD));
        } else if (e->function == 0xb || e->function == 0x1f) {
            e->edx = (uint32_t)v->index; /* x2APIC id */
        }
    }
    int rc = ioctl(v->fd, KVM_SET_CPUID2, c);
    free(c);
    if (rc < 0) {
        KVM_FAIL(errp, "KVM_SET_CPUID2");
        return -1;
    }
    return 0;
}

int vcpu_create(struct machine *m, int index, struct error **errp)
{
    struct vcpu *v = &m->vcpus[index];
    v->m = m;
    v->index = index;
    buf_init(&v->reset_state);
    v->fd = ioctl(m->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
    if (v->fd < 0) {
        KVM_FAIL(errp, "KVM_CREATE_VCPU");
        return -1;
    }
    v->run = mmap(NULL, m->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED) {
        v->run = NULL;
        error_setg_errno(errp, errno, "mmap of vCPU %d's kvm_run", index);
        return -1;
    }
    /* CPUID before anything else: KVM validates EFER.LME, XCR0 and MSRs
     * against the guest's CPUID, and freezes it at the first KVM_RUN. */
    return setup_cpuid(m, v, errp);
}

void vcpu_kick(struct vcpu *v)
{
    if (!v->run) {
        return;
    }
    __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (v->started) {
        pthread_kill(v->thread, SIG_KICK);
    }
}

/*
 * Park while a pause is requested, or while a reset this vCPU asked for
 * (triple fault) is pending: running on would only fault again.  Returns
 * true if the machine is quitting.
 */
static bool vcpu_park(struct vcpu *v)
{
    struct machine *m = v->m;
    pthread_mutex_lock(&m->lock);
    while ((m->pause_req || m->reset_req) && !m->quit) {
        if (!v->parked) {
            v->parked = true;
            m->nr_parked++;
            pthread_cond_broadcast(&m->cond);
        }
        pthread_cond_wait(&m->cond, &m->lock);
    }
    if (v->parked) {
        v->parked = false;
        m->nr_parked--;
    }
    bool quit = m->quit;
    if (!quit) {
        __atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&m->lock);
    return quit;
}

static void handle_io(struct vcpu *v)
{
    struct kvm_run *r = v->run;
    uint8_t *data = (uint8_t *)r + r->io.data_offset;
    for (uint32_t i = 0; i < r->io.count; i++) {
        bus_io(v->m, IO_SPACE_PIO, r->io.port, data + (size_t)i * r->io.size, r->io.size,
               r->io.direction == KVM_EXIT_IO_OUT);
    }
}

/* Returns false when the vCPU thread must stop. */
static bool handle_exit(struct vcpu *v)
{
    struct kvm_run *r = v->run;
    switch (r->exit_reason) {
    case KVM_EXIT_IO:
        handle_io(v);
        return true;
    case KVM_EXIT_MMIO:
        bus_io(v->m, IO_SPACE_MMIO, r->mmio.phys_addr, r->mmio.data, r->mmio.len, r->mmio.is_write);
        return true;
    case KVM_EXIT_INTR:
        return !vcpu_park(v);
    case KVM_EXIT_SHUTDOWN:
        log_warn("vCPU %d: triple fault, resetting", v->index);
        machine_request_reset(v->m);
        return !vcpu_park(v);
    case KVM_EXIT_SYSTEM_EVENT:
        if (r->system_event.type == KVM_SYSTEM_EVENT_RESET) {
            machine_request_reset(v->m);
        } else {
            machine_request_quit(v->m);
        }
        return !vcpu_park(v);
    case KVM_EXIT_FAIL_ENTRY:
        machine_fatal(v->m, "vCPU %d: KVM_RUN: entry failed, hardware reason 0x%llx", v->index,
                      (unsigned long long)r->fail_entry.hardware_entry_failure_reason);
        return false;
    case KVM_EXIT_INTERNAL_ERROR: {
        /* Include KVM's extra words (for an emulation failure: the
         * instruction bytes and RIP) and RIP itself: this is all a user
         * gets to find the instruction the host could not emulate. */
        char extra[160] = "";
        size_t pos = 0;
        for (uint32_t i = 0; i < r->internal.ndata && i < 6 && pos < sizeof(extra); i++) {
            pos += (size_t)snprintf(extra + pos, sizeof(extra) - pos, " 0x%llx",
                                    (unsigned long long)r->internal.data[i]);
        }
        struct kvm_regs regs;
        unsigned long long rip = ioctl(v->fd, KVM_GET_REGS, &regs) == 0 ? regs.rip : 0;
        machine_fatal(v->m, "vCPU %d: KVM_RUN: internal error, suberror %u at rip 0x%llx%s%s",
                      v->index, r->internal.suberror, rip, pos ? ", data" : "", extra);
        return false;
    }
    default:
        machine_fatal(v->m, "vCPU %d: KVM_RUN: unhandled exit reason %u", v->index, r->exit_reason);
        return false;
    }
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    struct machine *m = v->m;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIG_KICK);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);

    bool go = !vcpu_park(v);
    while (go) {
        if (ioctl(v->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                go = !vcpu_park(v);
                continue;
            }
            machine_fatal(m, "vCPU %d: KVM_RUN: %s", v->index, strerror(errno));
            break;
        }
        go = handle_exit(v);
    }
    pthread_mutex_lock(&m->lock);
    m->nr_alive--;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int vcpu_start_thread(struct vcpu *v, struct error **errp)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIG_KICK, &sa, NULL);

    /* Created with SIG_KICK blocked; the thread unblocks it itself. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIG_KICK);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    pthread_mutex_lock(&v->m->lock);
    v->m->nr_alive++;
    pthread_mutex_unlock(&v->m->lock);
    int rc = pthread_create(&v->thread, NULL, vcpu_thread, v);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_mutex_lock(&v->m->lock);
        v->m->nr_alive--;
        pthread_mutex_unlock(&v->m->lock);
        error_setg_errno(errp, rc, "cannot start the thread of vCPU %d", v->index);
        return -1;
    }
    v->started = true;
    return 0;
}

void vcpu_destroy(struct vcpu *v)
{
    if (v->started) {
        pthread_join(v->thread, NULL);
        v->started = false;
    }
    if (v->run) {
        munmap(v->run, v->m->run_size);
        v->run = NULL;
    }
    if (v->fd > 0) {
        close(v->fd);
    }
    buf_free(&v->reset_state);
}
