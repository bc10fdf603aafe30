/*
 * Machine internals shared by the files of src/machine/.  Device models use
 * the board interface (board.h) instead; the monitor and the snapshot code
 * use machine.h only.
 */
#ifndef SNAPVM_MACHINE_INTERNAL_H
#define SNAPVM_MACHINE_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "hw/device.h"
#include "machine/board.h"
#include "machine/machine.h"
#include "machine/ram.h"

struct vcpu {
    struct machine *m;
    int index;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool started;
    bool parked;                 /* under m->lock */
    struct byte_buf reset_state; /* vcpu_state_save() right after set-up */
};

struct io_region {
    enum io_space space;
    uint64_t base;
    uint64_t len;
    io_fn fn;
    struct device *dev;
};

struct machine {
    int kvm_fd;
    int vm_fd;
    size_t run_size;
    struct guest_ram ram;
    int nr_vcpus;
    struct vcpu *vcpus;

    struct device *devices;
    struct device *devices_tail;
    struct io_region *regions;
    size_t nr_regions;
    /* PCI INTx wiring declared by the devices (board.c), for the MP table. */
    struct board_pci_irq {
        uint8_t slot, pin, gsi;
    } pci_irqs[BOARD_MAX_PCI_IRQS];
    unsigned nr_pci_irqs;

    struct block_graph *blocks;

    /* vCPU state capture: the MSRs KVM lets us read, and the xsave size. */
    uint32_t *msrs;
    uint32_t nr_msrs;
    size_t xsave_size;
    struct byte_buf vm_reset_state;

    /* Guest boot: the built-in image (or a PVH kernel) is reloaded on reset. */
    char *append;
    char *kernel;
    char *initrd;
    uint64_t kernel_entry; /* entry point of -kernel (PVH: 32-bit; bzImage: 64-bit) */
    bool kernel_bzimage;   /* -kernel is a bzImage (boot_params in RSI), else PVH ELF */

    /* Everything below is protected by `lock`. */
    pthread_mutex_t lock;
    machine_event_fn event_fn; /* see machine_set_event_handler() */
    void *event_opaque;
    pthread_cond_t cond;
    enum run_state state;  /* see the transition table in machine.c */
    enum run_state after;  /* in save-vm/restore-vm: the state to end in */
    bool op_user_stop;     /* a snapshot's pause began on a stopped VM */
    char failed_load[256]; /* restore-failed: what failed */
    bool started;          /* machine_start() ran: vCPU threads exist */
    unsigned pause_count;
    bool pause_req;
    int nr_parked;
    int nr_alive;
    bool quit;
    int exit_status;
    bool reset_req;
    bool snapshot_busy;        /* a snapshot save/load/delete holds the machine */
    uint64_t clock_ns;         /* VM clock accumulated while paused */
    uint64_t clock_started_ns; /* CLOCK_MONOTONIC when vCPUs last resumed */
    bool clock_running;
    uint64_t paused_at_ns; /* CLOCK_MONOTONIC when the outermost pause began */
    int wake_fd;           /* eventfd: wakes machine_run() for quit/reset requests */
};

/* Dispatch of vCPU I/O exits to the regions devices registered (bus.c;
 * registering is part of the board interface, board.h). */
void bus_io(struct machine *m, enum io_space space, uint64_t addr, uint8_t *data, uint32_t len,
            bool is_write);

/* Set the VM clock (vm_state_load). */
void machine_set_vm_clock_ns(struct machine *m, uint64_t ns);

/* Requests from vCPU threads, served by machine_run() on the main thread
 * (machine_request_reset() is in board.h). */
void machine_fatal(struct machine *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* vcpu.c */
int vcpu_create(struct machine *m, int index, struct error **errp);
int vcpu_start_thread(struct vcpu *v, struct error **errp);
void vcpu_kick(struct vcpu *v);
void vcpu_destroy(struct vcpu *v);

/* vcpu_state.c */
int vcpu_state_probe(struct machine *m, struct error **errp);

/* boot.c, pvh.c, bzimage.c, mptable.c */
int boot_load_guest(struct machine *m, struct error **errp);
int boot_setup_bsp(struct machine *m, struct vcpu *v, struct error **errp);
/* -kernel's file and the -initrd file, read whole (boot.c). */
int boot_read_file(const char *opt, const char *path, uint8_t **data, size_t *len,
                   struct error **errp);
/* Guest-visible RAM map, in e820 terms (1 = RAM, 2 = reserved), for both
 * boot protocols; returns the number of entries (at most BOOT_MAX_E820). */
#define BOOT_MAX_E820 8
struct boot_e820 {
    uint64_t addr, size;
    uint32_t type;
};
unsigned boot_e820_map(const struct machine *m, struct boot_e820 *map);
bool pvh_is_elf(const uint8_t *f, size_t len);
int pvh_load(struct machine *m, const uint8_t *f, size_t len, uint64_t *entry, struct error **errp);
uint64_t pvh_start_info_addr(void);
bool bzimage_is_bzimage(const uint8_t *f, size_t len);
/* Load the protected-mode kernel, initrd, command line and boot_params;
 * `*entry` is the 64-bit entry point (boot_params at bzimage_params_addr()). */
int bzimage_load(struct machine *m, const uint8_t *f, size_t len, uint64_t *entry,
                 struct error **errp);
uint64_t bzimage_params_addr(void);
/* The MP table (CPUs, IOAPIC, ISA and PCI interrupt wiring) in the BIOS area. */
int mptable_write(struct machine *m, struct error **errp);

/* Report an ioctl failure as "IOCTL_NAME: strerror(errno)" (errno preserved). */
#define KVM_FAIL(errp, name) error_setg_errno(errp, errno, "%s", name)

#endif
