/*
 * The machine object: creating the KVM VM (in-kernel irqchip and PIT, guest
 * RAM, vCPUs, devices), the run state that QMP reports, pause/resume of all
 * vCPUs, and the main-thread loop that serves quit and reset requests.
 *
 * Pausing is the base of stop/cont, reset and snapshots: a pause sets
 * pause_req, sets immediate_exit in every vCPU's kvm_run and sends it a
 * signal, then waits until every live vCPU thread has parked (vcpu.c).  A
 * count makes pauses nest, so the snapshot code can pause a VM that the
 * user has already stopped.
 */
#include "machine/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "block/block.h"
#include "hw/hw.h"
#include "machine/cmdline.h"
#include "util/log.h"

/* Called with m->lock held: events leave in the order of the changes. */
static void emit_event_locked(struct machine *m, const char *event, json_t *data)
{
    if (m->event_fn) {
        m->event_fn(m->event_opaque, event, data);
    } else {
        json_decref(data);
    }
}

static void emit_event(struct machine *m, const char *event, json_t *data)
{
    pthread_mutex_lock(&m->lock);
    emit_event_locked(m, event, data);
    pthread_mutex_unlock(&m->lock);
}

void machine_emit_event(struct machine *m, const char *event, json_t *data)
{
    emit_event(m, event, data);
}

void machine_set_event_handler(struct machine *m, machine_event_fn fn, void *opaque)
{
    pthread_mutex_lock(&m->lock);
    m->event_fn = fn;
    m->event_opaque = opaque;
    pthread_mutex_unlock(&m->lock);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

const char *run_state_name(enum run_state state)
{
    switch (state) {
    case RUN_STATE_PRELAUNCH:
        return "prelaunch";
    case RUN_STATE_RUNNING:
        return "running";
    case RUN_STATE_PAUSED:
        return "paused";
    case RUN_STATE_SAVE_VM:
        return "save-vm";
    case RUN_STATE_RESTORE_VM:
    case RUN_STATE_RESTORE_FAILED: /* QEMU's status after a failed load */
        return "restore-vm";
    case RUN_STATE_SHUTDOWN:
        return "shutdown";
    }
    return "unknown";
}

#define BIT(s) (1u << (s))

/*
 * The run state's life cycle: where each state may go.  Every change goes
 * through set_state_locked(), under m->lock, together with its event.
 *
 *  - prelaunch (-S) and paused are the user's stops; cont leaves them.
 *  - save-vm and restore-vm bracket a snapshot operation's pause
 *    (machine_snapshot_pause/resume).  They return to the state the user
 *    asked for meanwhile: the one before, or what a stop or cont sent
 *    during the operation chose (m->after).
 *  - restore-failed: a load failed after it had changed something (the
 *    VM is half-loaded).  It never runs again as it is: only another load
 *    or a system_reset (to paused) leave it, or quit.
 *  - shutdown is the end; quit reaches it from everywhere.
 */
static const unsigned transitions[] = {
        [RUN_STATE_PRELAUNCH] = BIT(RUN_STATE_RUNNING) | BIT(RUN_STATE_SAVE_VM) |
                                BIT(RUN_STATE_RESTORE_VM) | BIT(RUN_STATE_SHUTDOWN),
        [RUN_STATE_RUNNING] = BIT(RUN_STATE_PAUSED) | BIT(RUN_STATE_SAVE_VM) |
                              BIT(RUN_STATE_RESTORE_VM) | BIT(RUN_STATE_SHUTDOWN),
        [RUN_STATE_PAUSED] = BIT(RUN_STATE_RUNNING) | BIT(RUN_STATE_SAVE_VM) |
                             BIT(RUN_STATE_RESTORE_VM) | BIT(RUN_STATE_SHUTDOWN),
        [RUN_STATE_SAVE_VM] = BIT(RUN_STATE_PRELAUNCH) | BIT(RUN_STATE_RUNNING) |
                              BIT(RUN_STATE_PAUSED) | BIT(RUN_STATE_SHUTDOWN),
        [RUN_STATE_RESTORE_VM] = BIT(RUN_STATE_PRELAUNCH) | BIT(RUN_STATE_RUNNING) |
                                 BIT(RUN_STATE_PAUSED) | BIT(RUN_STATE_RESTORE_FAILED) |
                                 BIT(RUN_STATE_SHUTDOWN),
        [RUN_STATE_RESTORE_FAILED] =
                BIT(RUN_STATE_RESTORE_VM) | BIT(RUN_STATE_PAUSED) | BIT(RUN_STATE_SHUTDOWN),
        [RUN_STATE_SHUTDOWN] = 0,
};

bool run_state_transition_allowed(enum run_state from, enum run_state to)
{
    return (unsigned)from < sizeof(transitions) / sizeof(transitions[0]) &&
           (transitions[from] & BIT(to));
}

static void set_state_locked(struct machine *m, enum run_state to)
{
    if (m->state == to) {
        return;
    }
    if (!run_state_transition_allowed(m->state, to)) {
        log_error("run state: %s -> %s is not a transition", run_state_name(m->state),
                  run_state_name(to));
        abort(); /* a bug in this file, never a user error */
    }
    m->state = to;
}

enum run_state machine_run_state(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    enum run_state s = m->state;
    pthread_mutex_unlock(&m->lock);
    return s;
}

bool machine_is_running(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    bool running = m->pause_count == 0 && !m->quit;
    pthread_mutex_unlock(&m->lock);
    return running;
}

struct block_graph *machine_block_graph(struct machine *m)
{
    return m->blocks;
}

int machine_vcpu_count(struct machine *m)
{
    return m->nr_vcpus;
}

void *machine_ram(struct machine *m, uint64_t *size)
{
    if (size) {
        *size = m->ram.size;
    }
    return m->ram.host;
}

const struct guest_ram *machine_guest_ram(struct machine *m)
{
    return &m->ram;
}

uint64_t machine_vm_clock_ns(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    uint64_t ns = m->clock_ns;
    if (m->clock_running) {
        ns += now_ns() - m->clock_started_ns;
    }
    pthread_mutex_unlock(&m->lock);
    return ns;
}

void machine_set_vm_clock_ns(struct machine *m, uint64_t ns)
{
    pthread_mutex_lock(&m->lock);
    m->clock_ns = ns;
    if (m->clock_running) {
        m->clock_started_ns = now_ns();
    }
    pthread_mutex_unlock(&m->lock);
}

/* Called with m->lock held. */
static void clock_stop_locked(struct machine *m)
{
    if (m->clock_running) {
        m->clock_ns += now_ns() - m->clock_started_ns;
        m->clock_running = false;
    }
}

static void clock_start_locked(struct machine *m)
{
    if (!m->clock_running) {
        m->clock_started_ns = now_ns();
        m->clock_running = true;
    }
}

/* ---- devices ---- */

void machine_add_device(struct machine *m, struct device *dev, const char *id)
{
    snprintf(dev->id, sizeof(dev->id), "%s", id);
    dev->machine = m;
    dev->next = NULL;
    if (m->devices_tail) {
        m->devices_tail->next = dev;
    } else {
        m->devices = dev;
    }
    m->devices_tail = dev;
}

struct device *machine_next_device(struct machine *m, struct device *prev)
{
    return prev ? prev->next : m->devices;
}

struct device *machine_find_device(struct machine *m, const char *id)
{
    for (struct device *d = m->devices; d; d = d->next) {
        if (strcmp(d->id, id) == 0) {
            return d;
        }
    }
    return NULL;
}

void machine_set_irq(struct machine *m, unsigned irq, bool level)
{
    struct kvm_irq_level l = {.irq = irq, .level = level ? 1 : 0};
    if (ioctl(m->vm_fd, KVM_IRQ_LINE, &l) < 0) {
        log_warn("KVM_IRQ_LINE irq %u: %s", irq, strerror(errno));
    }
}

/* ---- pause / resume ---- */

/* Called with m->lock held.  Returns with every live vCPU parked. */
static void pause_locked(struct machine *m)
{
    if (m->pause_count++ == 0) {
        m->pause_req = true;
        for (int i = 0; i < m->nr_vcpus; i++) {
            vcpu_kick(&m->vcpus[i]);
        }
        while (m->nr_parked < m->nr_alive) {
            pthread_cond_wait(&m->cond, &m->lock);
        }
        clock_stop_locked(m);
        m->paused_at_ns = now_ns();
    }
}

int machine_pause_vcpus(struct machine *m, struct error **errp)
{
    pthread_mutex_lock(&m->lock);
    pause_locked(m);
    pthread_mutex_unlock(&m->lock);
    (void)errp;
    return 0;
}

/*
 * The in-kernel PIT keeps counting while the vCPUs are paused and, in its
 * default reinjection mode, delivers every period it missed as soon as they
 * run again: a burst of timer interrupts after each stop.  Reading its state
 * and writing it back re-arms the channels from now and drops what was
 * missed, so guest time, like the VM clock, stands still while paused (QEMU
 * does the same on stop/cont).  Short pauses (a snapshot's final pass) are
 * left alone: re-arming restarts the current period, and frequent short
 * pauses would then starve the guest of ticks, while the one or two periods
 * they miss are harmless.  Called with m->lock held, vCPUs parked.
 */
#define PIT_REARM_AFTER_NS (50 * 1000000ULL)

static void pit_rearm(struct machine *m)
{
    struct kvm_pit_state2 pit;
    if (ioctl(m->vm_fd, KVM_GET_PIT2, &pit) < 0 || ioctl(m->vm_fd, KVM_SET_PIT2, &pit) < 0) {
        log_warn("re-arming the PIT after a pause: KVM_GET/SET_PIT2: %s", strerror(errno));
    }
}

static void resume_locked(struct machine *m)
{
    if (m->pause_count > 0 && --m->pause_count == 0) {
        if (!m->quit && m->started && now_ns() - m->paused_at_ns >= PIT_REARM_AFTER_NS) {
            pit_rearm(m);
        }
        m->pause_req = false;
        if (!m->quit) {
            clock_start_locked(m);
        }
        pthread_cond_broadcast(&m->cond);
    }
}

void machine_resume_vcpus(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    resume_locked(m);
    pthread_mutex_unlock(&m->lock);
}

/* The user's stop holds one pause count from here until cont. */
static bool stopped_by_user(enum run_state s)
{
    return s == RUN_STATE_PRELAUNCH || s == RUN_STATE_PAUSED || s == RUN_STATE_RESTORE_FAILED;
}

static bool snapshot_state(enum run_state s)
{
    return s == RUN_STATE_SAVE_VM || s == RUN_STATE_RESTORE_VM;
}

int machine_stop(struct machine *m, struct error **errp)
{
    (void)errp;
    pthread_mutex_lock(&m->lock);
    switch (m->state) {
    case RUN_STATE_RUNNING:
        pause_locked(m);
        set_state_locked(m, RUN_STATE_PAUSED);
        emit_event_locked(m, "STOP", NULL);
        break;
    case RUN_STATE_SAVE_VM:
    case RUN_STATE_RESTORE_VM:
        /*
         * The guest is already stopped for the snapshot (its STOP event
         * has gone out): it stays stopped when the operation ends.
         */
        if (m->after == RUN_STATE_RUNNING) {
            m->after = RUN_STATE_PAUSED;
        }
        break;
    default:
        break; /* as QEMU: stopping a stopped VM succeeds */
    }
    pthread_mutex_unlock(&m->lock);
    return 0;
}

int machine_cont(struct machine *m, struct error **errp)
{
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    switch (m->state) {
    case RUN_STATE_RUNNING:
        break;
    case RUN_STATE_PAUSED:
    case RUN_STATE_PRELAUNCH:
        set_state_locked(m, RUN_STATE_RUNNING);
        resume_locked(m);
        emit_event_locked(m, "RESUME", NULL);
        break;
    case RUN_STATE_SAVE_VM:
    case RUN_STATE_RESTORE_VM:
        /* Honoured when the operation ends: the guest runs then (RESUME). */
        m->after = RUN_STATE_RUNNING;
        break;
    case RUN_STATE_RESTORE_FAILED:
        error_setg(errp,
                   "the VM was left half-loaded by a failed load (%s): load a snapshot "
                   "again, or system_reset it, before 'cont'",
                   m->failed_load[0] ? m->failed_load : "no detail");
        rc = -1;
        break;
    case RUN_STATE_SHUTDOWN:
        error_setg(errp, "the VM is shutting down");
        rc = -1;
        break;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int reset_paused(struct machine *m, struct error **errp)
{
    /* With every vCPU parked: devices first, then the VM-wide and vCPU state
     * captured at creation, then a fresh copy of the guest image. */
    for (struct device *d = m->devices; d; d = d->next) {
        device_reset(d);
    }
    if (vm_state_load(m, m->vm_reset_state.data, m->vm_reset_state.len, errp) < 0) {
        return -1;
    }
    for (int i = 0; i < m->nr_vcpus; i++) {
        struct byte_buf *b = &m->vcpus[i].reset_state;
        if (vcpu_state_load(m, i, b->data, b->len, errp) < 0) {
            return -1;
        }
    }
    if (boot_load_guest(m, errp) < 0) {
        return -1;
    }
    /* The guest image was copied into RAM by us, not by a vCPU or a device
     * model: while dirty tracking is on (a live save, or between saves for
     * an incremental one), every page counts as written. */
    guest_ram_mark_dirty(&m->ram, m->ram.host, m->ram.size);
    return 0;
}

int machine_system_reset(struct machine *m, struct error **errp)
{
    /*
     * Not while a snapshot is taken or loaded: the reset would race with
     * its capture or replace what it applies.  A half-loaded VM may be
     * reset: it is then a freshly booted one, still stopped.
     */
    pthread_mutex_lock(&m->lock);
    enum run_state s = m->state;
    if (snapshot_state(s) || s == RUN_STATE_SHUTDOWN) {
        pthread_mutex_unlock(&m->lock);
        error_setg(errp, "the VM is %s: try again when %s",
                   s == RUN_STATE_SHUTDOWN ? "shutting down" : "busy with a snapshot",
                   s == RUN_STATE_SHUTDOWN ? "it is restarted" : "the snapshot is done");
        return -1;
    }
    pause_locked(m);
    pthread_mutex_unlock(&m->lock);
    int rc = reset_paused(m, errp);
    pthread_mutex_lock(&m->lock);
    if (rc == 0) {
        if (m->state == RUN_STATE_RESTORE_FAILED) {
            set_state_locked(m, RUN_STATE_PAUSED); /* its pause count stays the user's */
        }
        json_t *data = json_pack("{s:b, s:s}", "guest", 0, "reason", "host-qmp-system-reset");
        emit_event_locked(m, "RESET", data);
    }
    resume_locked(m);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static void wake_main(struct machine *m)
{
    uint64_t one = 1;
    if (write(m->wake_fd, &one, sizeof(one)) < 0) {
        log_warn("wake-up eventfd: %s", strerror(errno));
    }
}

static void request_quit(struct machine *m, const char *reason, bool guest, int status)
{
    pthread_mutex_lock(&m->lock);
    bool first = !m->quit;
    if (first) {
        m->quit = true;
        m->exit_status = status;
        set_state_locked(m, RUN_STATE_SHUTDOWN);
        pthread_cond_broadcast(&m->cond);
        emit_event_locked(m, "SHUTDOWN", json_pack("{s:b, s:s}", "guest", guest, "reason", reason));
    }
    pthread_mutex_unlock(&m->lock);
    if (first) {
        wake_main(m);
    }
}

void machine_request_quit(struct machine *m)
{
    request_quit(m, "host-qmp-quit", false, 0);
}

void machine_request_reset(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    m->reset_req = true;
    pthread_mutex_unlock(&m->lock);
    wake_main(m);
}

void machine_fatal(struct machine *m, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) {
        msg = NULL;
    }
    va_end(ap);
    log_error("%s", msg ? msg : fmt);
    free(msg);
    request_quit(m, "guest-panic", true, 1);
}

/* ---- creation ---- */

static int open_mem_file(const char *path, uint64_t size, struct error **errp)
{
    struct stat st;
    int fd;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    } else {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        error_setg_errno(errp, errno, "-mem-path: '%s'", path);
        return -1;
    }
    if (fstat(fd, &st) < 0 || ((uint64_t)st.st_size < size && ftruncate(fd, (off_t)size) < 0)) {
        error_setg_errno(errp, errno, "-mem-path: cannot size '%s' to %llu bytes", path,
                         (unsigned long long)size);
        close(fd);
        return -1;
    }
    return fd;
}

static int set_memslot(struct machine *m, uint32_t slot, uint64_t gpa, uint8_t *host, uint64_t size,
                       struct error **errp)
{
    struct kvm_userspace_memory_region r = {
            .slot = slot,
            .guest_phys_addr = gpa,
            .memory_size = size,
            .userspace_addr = (uint64_t)(uintptr_t)host,
    };
    if (ioctl(m->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
        KVM_FAIL(errp, "KVM_SET_USER_MEMORY_REGION");
        return -1;
    }
    return 0;
}

static int ram_init(struct machine *m, const struct vm_config *cfg, struct error **errp)
{
    uint64_t size = cfg->ram_size;
    void *p;
    m->ram.file_fd = -1;
    if (cfg->mem_path) {
        int fd = open_mem_file(cfg->mem_path, size, errp);
        if (fd < 0) {
            return -1;
        }
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
        } else {
            m->ram.file_fd = fd; /* kept: a save asks it where the holes are */
        }
        m->ram.shared_file = true;
    } else {
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
    }
    if (p == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot map %llu bytes of guest RAM",
                         (unsigned long long)size);
        return -1;
    }
    m->ram.host = p;
    m->ram.size = size;
    m->ram.low_size = size < GUEST_LOW_RAM_MAX ? size : GUEST_LOW_RAM_MAX;
    if (set_memslot(m, 0, 0, m->ram.host, m->ram.low_size, errp) < 0) {
        return -1;
    }
    if (size > m->ram.low_size &&
        set_memslot(m, 1, GUEST_HIGH_RAM_BASE, m->ram.host + m->ram.low_size,
                    size - m->ram.low_size, errp) < 0) {
        return -1;
    }
    return 0;
}

static int kvm_init(struct machine *m, struct error **errp)
{
    m->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (m->kvm_fd < 0) {
        error_setg_errno(errp, errno, "cannot open /dev/kvm");
        return -1;
    }
    int api = ioctl(m->kvm_fd, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        error_setg(errp, "KVM_GET_API_VERSION: got %d, need %d", api, KVM_API_VERSION);
        return -1;
    }
    m->vm_fd = ioctl(m->kvm_fd, KVM_CREATE_VM, 0);
    if (m->vm_fd < 0) {
        KVM_FAIL(errp, "KVM_CREATE_VM");
        return -1;
    }
    /* The irqchip (PIC, IOAPIC, and a LAPIC per vCPU) must exist before any
     * vCPU is created, and the PIT needs the irqchip to deliver IRQ 0. */
    if (ioctl(m->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
        KVM_FAIL(errp, "KVM_CREATE_IRQCHIP");
        return -1;
    }
    struct kvm_pit_config pit = {.flags = 0};
    if (ioctl(m->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
        KVM_FAIL(errp, "KVM_CREATE_PIT2");
        return -1;
    }
    int sz = ioctl(m->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz < 0) {
        KVM_FAIL(errp, "KVM_GET_VCPU_MMAP_SIZE");
        return -1;
    }
    m->run_size = (size_t)sz;
    return 0;
}

/* The -blockdev nodes, in command-line order (children before parents). */
static int blocks_init(struct machine *m, const struct vm_config *cfg, struct error **errp)
{
    m->blocks = block_graph_new();
    size_t i;
    json_t *opts;
    json_array_foreach(cfg->blockdevs, i, opts)
    {
        if (!block_graph_add(m->blocks, opts, errp)) {
            error_prepend(errp, "-blockdev");
            return -1;
        }
    }
    return 0;
}

struct machine *machine_new(const struct vm_config *cfg, struct error **errp)
{
    struct machine *m = calloc(1, sizeof(*m));
    if (!m) {
        abort();
    }
    m->kvm_fd = m->vm_fd = m->wake_fd = -1;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    m->state = cfg->start_paused ? RUN_STATE_PRELAUNCH : RUN_STATE_RUNNING;
    if (cfg->start_paused) {
        /* -S: the user's "stop" is the first pause; cont drops it. */
        m->pause_count = 1;
        m->pause_req = true;
    }
    m->append = strdup(cfg->append ? cfg->append : "");
    m->kernel = cfg->kernel ? strdup(cfg->kernel) : NULL;
    m->initrd = cfg->initrd ? strdup(cfg->initrd) : NULL;
    buf_init(&m->vm_reset_state);
    m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->wake_fd < 0) {
        error_setg_errno(errp, errno, "eventfd");
        goto fail;
    }
    if (kvm_init(m, errp) < 0 || ram_init(m, cfg, errp) < 0) {
        goto fail;
    }
    m->vcpus = calloc((size_t)cfg->smp, sizeof(*m->vcpus));
    if (!m->vcpus) {
        abort();
    }
    for (int i = 0; i < cfg->smp; i++) {
        if (vcpu_create(m, i, errp) < 0) {
            goto fail;
        }
        m->nr_vcpus++;
    }
    if (vcpu_state_probe(m, errp) < 0 || blocks_init(m, cfg, errp) < 0 ||
        hw_create_devices(m, cfg, errp) < 0 || boot_load_guest(m, errp) < 0 ||
        boot_setup_bsp(m, &m->vcpus[0], errp) < 0) {
        goto fail;
    }
    /* Snapshot the pristine vCPU and VM state: system_reset goes back to it. */
    for (int i = 0; i < m->nr_vcpus; i++) {
        if (vcpu_state_save(m, i, &m->vcpus[i].reset_state, errp) < 0) {
            goto fail;
        }
    }
    if (vm_state_save(m, &m->vm_reset_state, errp) < 0) {
        goto fail;
    }
    return m;
fail:
    machine_free(m);
    return NULL;
}

int machine_start(struct machine *m, struct error **errp)
{
    pthread_mutex_lock(&m->lock);
    m->started = true;
    if (m->pause_count == 0) {
        clock_start_locked(m);
    }
    pthread_mutex_unlock(&m->lock);
    for (int i = 0; i < m->nr_vcpus; i++) {
        if (vcpu_start_thread(&m->vcpus[i], errp) < 0) {
            return -1;
        }
    }
    return 0;
}

static void serve_requests(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    /* A guest's reset waits for a snapshot's pause to end (it wakes us). */
    bool reset = m->reset_req && !m->quit && !snapshot_state(m->state);
    pthread_mutex_unlock(&m->lock);
    if (reset) {
        struct error *err = NULL;
        if (machine_pause_vcpus(m, &err) == 0) {
            /* Cleared only now: the vCPU that asked waits parked until then. */
            pthread_mutex_lock(&m->lock);
            m->reset_req = false;
            pthread_mutex_unlock(&m->lock);
            if (reset_paused(m, &err) < 0) {
                error_report_and_free(err);
                request_quit(m, "guest-reset", true, 1);
            }
            machine_resume_vcpus(m);
            emit_event(m, "RESET", json_pack("{s:b, s:s}", "guest", 1, "reason", "guest-reset"));
        }
    }
}

int machine_run(struct machine *m)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        log_warn("signalfd: %s", strerror(errno));
    }
    for (;;) {
        pthread_mutex_lock(&m->lock);
        bool quit = m->quit;
        pthread_mutex_unlock(&m->lock);
        if (quit) {
            break;
        }
        struct pollfd pfd[2] = {{.fd = m->wake_fd, .events = POLLIN},
                                {.fd = sfd, .events = POLLIN}};
        if (poll(pfd, sfd >= 0 ? 2 : 1, -1) < 0 && errno != EINTR) {
            log_warn("poll: %s", strerror(errno));
        }
        if (pfd[0].revents & POLLIN) {
            uint64_t v;
            if (read(m->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
                log_warn("wake-up eventfd: %s", strerror(errno));
            }
            serve_requests(m);
        }
        if (sfd >= 0 && (pfd[1].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                log_debug("signal %u: shutting down", si.ssi_signo);
                request_quit(m, "host-signal", false, 0);
            }
        }
    }
    if (sfd >= 0) {
        close(sfd);
    }
    pthread_mutex_lock(&m->lock);
    int status = m->exit_status;
    pthread_mutex_unlock(&m->lock);
    return status;
}

void machine_free(struct machine *m)
{
    if (!m) {
        return;
    }
    pthread_mutex_lock(&m->lock);
    m->quit = true;
    m->pause_req = false;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    for (int i = 0; i < m->nr_vcpus; i++) {
        vcpu_kick(&m->vcpus[i]);
    }
    for (int i = 0; i < m->nr_vcpus; i++) {
        vcpu_destroy(&m->vcpus[i]);
    }
    free(m->vcpus);
    /* Devices go before the block graph: virtio-blk flushes its node. */
    hw_free_devices(m);
    if (m->blocks) {
        block_graph_free(m->blocks); /* flushes and releases the image locks */
    }
    free(m->regions);
    if (m->ram.host) {
        munmap(m->ram.host, m->ram.size);
        if (m->ram.file_fd >= 0) {
            close(m->ram.file_fd);
        }
    }
    free(m->msrs);
    buf_free(&m->vm_reset_state);
    if (m->vm_fd >= 0) {
        close(m->vm_fd);
    }
    if (m->kvm_fd >= 0) {
        close(m->kvm_fd);
    }
    if (m->wake_fd >= 0) {
        close(m->wake_fd);
    }
    free(m->append);
    free(m->kernel);
    free(m->initrd);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cond);
    free(m);
}

int machine_snapshot_claim(struct machine *m, struct error **errp)
{
    pthread_mutex_lock(&m->lock);
    bool busy = m->snapshot_busy;
    m->snapshot_busy = true;
    pthread_mutex_unlock(&m->lock);
    if (busy) {
        error_setg(errp, "Another snapshot operation is in progress; wait for it to finish");
        return -1;
    }
    return 0;
}

void machine_snapshot_release(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    m->snapshot_busy = false;
    pthread_mutex_unlock(&m->lock);
}

int machine_snapshot_pause(struct machine *m, enum run_state during, struct error **errp)
{
    pthread_mutex_lock(&m->lock);
    enum run_state s = m->state;
    int rc = -1;
    if (s == RUN_STATE_SHUTDOWN) {
        /* quit waits for an operation under way: let it finish its work. */
        pause_locked(m);
        rc = 0;
    } else if (snapshot_state(s)) {
        error_setg(errp, "the VM is busy (%s)", run_state_name(s));
    } else if (s == RUN_STATE_RESTORE_FAILED && during != RUN_STATE_RESTORE_VM) {
        error_setg(errp,
                   "the VM was left half-loaded by a failed load (%s): load a snapshot again, "
                   "or system_reset it, before saving one",
                   m->failed_load);
    } else {
        /* Loading over a half-loaded VM leaves it stopped: the user says cont. */
        m->after = s == RUN_STATE_RESTORE_FAILED ? RUN_STATE_PAUSED : s;
        m->op_user_stop = stopped_by_user(s);
        pause_locked(m);
        set_state_locked(m, during);
        if (s == RUN_STATE_RUNNING && m->started) {
            emit_event_locked(m, "STOP", NULL);
        }
        rc = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

void machine_snapshot_resume(struct machine *m, const char *half_loaded)
{
    pthread_mutex_lock(&m->lock);
    if (m->state == RUN_STATE_SHUTDOWN) {
        resume_locked(m); /* quit came meanwhile: the vCPUs exit */
    } else if (half_loaded) {
        /*
         * QEMU's rule: a load that failed after it changed something
         * leaves the VM stopped, never running half-loaded.  One pause
         * count stays, as for a user's stop; STOP tells a client that
         * saw the VM running (or a RESUME) that it is not.
         */
        snprintf(m->failed_load, sizeof(m->failed_load), "%s", half_loaded);
        set_state_locked(m, RUN_STATE_RESTORE_FAILED);
        if (m->op_user_stop) {
            resume_locked(m);
        }
        emit_event_locked(m, "STOP", NULL);
    } else {
        enum run_state to = m->after;
        set_state_locked(m, to);
        m->failed_load[0] = 0;
        /*
         * Counts held: the operation's, and the user's if the VM was
         * stopped before.  Running: both go (a cont came meanwhile if the
         * user's was there).  Stopped: exactly one stays, the user's (a
         * stop came meanwhile if there was none: the operation's becomes it).
         */
        if (to == RUN_STATE_RUNNING) {
            resume_locked(m);
            if (m->op_user_stop) {
                resume_locked(m);
            }
        } else if (m->op_user_stop) {
            resume_locked(m);
        }
        if (to == RUN_STATE_RUNNING && m->started) {
            emit_event_locked(m, "RESUME", NULL);
        }
    }
    bool reset = m->reset_req;
    pthread_mutex_unlock(&m->lock);
    if (reset) {
        wake_main(m); /* a guest reset waited for the snapshot */
    }
}

bool machine_ram_is_private(struct machine *m)
{
    return !m->ram.shared_file;
}

int machine_ram_file(struct machine *m)
{
    return m->ram.shared_file ? m->ram.file_fd : -1;
}
