/*
 * Round trip of the whole machine state on a running built-in guest, on real
 * KVM: pause, save vCPU, VM and device state plus a copy of RAM, let the
 * guest run on and change its memory, then load everything back.  The guest
 * must continue from the saved point: its next tick is the saved tick + 1
 * and its memory checksum is the saved one.  Also: a record with a wrong
 * length or a missing section is refused with a message naming it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hw/device.h"
#include "machine/cmdline.h"
#include "machine/machine.h"

struct serial_client {
    int fd;
    char buf[65536];
    size_t len;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Next complete line (without '\n') into out; fails the test after 10 s. */
static void read_line(struct serial_client *c, char *out, size_t cap)
{
    double deadline = now() + 10;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            assert_true(n < cap);
            memcpy(out, c->buf, n);
            out[n] = 0;
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            return;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        assert_true(now() < deadline);
        if (poll(&p, 1, 100) > 0) {
            ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
            assert_true(r > 0);
            c->len += (size_t)r;
        }
    }
}

static bool is_tick(const char *line, unsigned long *n)
{
    char tail;
    return sscanf(line, "tick %lu%c", n, &tail) == 1;
}

/* Send a command and return its reply (skipping timer tick lines). */
static void command(struct serial_client *c, const char *cmd, char *out, size_t cap)
{
    char line[256];
    snprintf(line, sizeof(line), "%s\n", cmd);
    assert_int_equal(write(c->fd, line, strlen(line)), (ssize_t)strlen(line));
    for (;;) {
        unsigned long n;
        read_line(c, out, cap);
        if (!is_tick(out, &n)) {
            return;
        }
    }
}

/* Everything a snapshot holds, in memory. */
struct saved {
    struct byte_buf vm;
    struct byte_buf vcpu[4];
    struct byte_buf dev[8];
    int nr_dev;
    void *ram;
    uint64_t ram_size;
};

static void save_all(struct machine *m, struct saved *s)
{
    struct error *err = NULL;
    buf_init(&s->vm);
    assert_int_equal(vm_state_save(m, &s->vm, &err), 0);
    for (int i = 0; i < machine_vcpu_count(m); i++) {
        buf_init(&s->vcpu[i]);
        assert_int_equal(vcpu_state_save(m, i, &s->vcpu[i], &err), 0);
    }
    s->nr_dev = 0;
    for (struct device *d = machine_next_device(m, NULL); d; d = machine_next_device(m, d)) {
        buf_init(&s->dev[s->nr_dev]);
        device_save(d, &s->dev[s->nr_dev++]);
    }
    void *ram = machine_ram(m, &s->ram_size);
    s->ram = malloc(s->ram_size);
    memcpy(s->ram, ram, s->ram_size);
}

static void load_all(struct machine *m, struct saved *s)
{
    struct error *err = NULL;
    memcpy(machine_ram(m, NULL), s->ram, s->ram_size);
    /* The order documented in machine.h: VM, devices, vCPUs. */
    assert_int_equal(vm_state_load(m, s->vm.data, s->vm.len, &err), 0);
    int i = 0;
    for (struct device *d = machine_next_device(m, NULL); d; d = machine_next_device(m, d), i++) {
        if (device_load(d, s->dev[i].data, s->dev[i].len, &err) < 0) {
            fail_msg("%s", err->message);
        }
    }
    for (int v = 0; v < machine_vcpu_count(m); v++) {
        if (vcpu_state_load(m, v, s->vcpu[v].data, s->vcpu[v].len, &err) < 0) {
            fail_msg("%s", err->message);
        }
    }
}

static void free_saved(struct machine *m, struct saved *s)
{
    buf_free(&s->vm);
    for (int i = 0; i < machine_vcpu_count(m); i++) {
        buf_free(&s->vcpu[i]);
    }
    for (int i = 0; i < s->nr_dev; i++) {
        buf_free(&s->dev[i]);
    }
    free(s->ram);
}

static void expect_load_error(int rc, struct error **errp, const char *needle)
{
    assert_int_equal(rc, -1);
    assert_non_null(*errp);
    if (!strstr((*errp)->message, needle)) {
        fail_msg("'%s' lacks '%s'", (*errp)->message, needle);
    }
    error_free(*errp);
    *errp = NULL;
}

static void test_roundtrip_on_running_guest(void **state)
{
    (void)state;
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
        skip();
    }
    char dir[] = "/tmp/snapvm-state-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sock[128], serial[160], img[128], blockdev[256];
    snprintf(sock, sizeof(sock), "%s/serial.sock", dir);
    snprintf(serial, sizeof(serial), "unix:%s,server=on,wait=off", sock);
    snprintf(img, sizeof(img), "%s/disk.raw", dir);
    snprintf(blockdev, sizeof(blockdev),
             "driver=raw,node-name=d0,file.driver=file,file.filename=%s", img);
    FILE *f = fopen(img, "w");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), 1 << 20), 0);
    fclose(f);
    char *argv[] = {"snapvm",
                    "-m",
                    "32",
                    "-smp",
                    "2",
                    "-serial",
                    serial,
                    "-append",
                    "tick_ms=20",
                    "-blockdev",
                    blockdev,
                    "-device",
                    "virtio-blk-pci,drive=d0",
                    NULL};
    struct vm_config cfg;
    struct error *err = NULL;
    vm_config_init(&cfg);
    assert_int_equal(vm_config_parse(&cfg, 13, argv, &err), 0);
    struct machine *m = machine_new(&cfg, &err);
    if (!m) {
        fail_msg("%s", err->message);
    }
    struct serial_client c = {.len = 0};
    c.fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, sock);
    assert_int_equal(connect(c.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(machine_start(m, &err), 0);

    char line[256];
    unsigned long t;
    do {
        read_line(&c, line, sizeof(line));
    } while (!is_tick(line, &t) || t < 3);
    command(&c, "fill 11 8", line, sizeof(line));
    assert_string_equal(line, "ok");
    char sum_before[64];
    command(&c, "sum", sum_before, sizeof(sum_before));
    command(&c, "disk write 0 1 5", line, sizeof(line));
    assert_string_equal(line, "ok");

    /* Half a command, sitting in the UART or the guest's line buffer: it is
     * part of the saved state too. */
    assert_int_equal(write(c.fd, "su", 2), 2);
    usleep(50000);

    /* Pause at a line boundary, so the saved tick is the last line seen. */
    struct saved s;
    unsigned long saved_tick = 0;
    for (;;) {
        read_line(&c, line, sizeof(line));
        if (!is_tick(line, &saved_tick)) {
            continue;
        }
        assert_int_equal(machine_pause_vcpus(m, &err), 0);
        usleep(20000);
        struct pollfd p = {.fd = c.fd, .events = POLLIN};
        if (c.len == 0 && poll(&p, 1, 0) == 0) {
            break; /* nothing printed after that line */
        }
        machine_resume_vcpus(m);
    }
    assert_false(machine_is_running(m));
    save_all(m, &s);
    uint64_t clock_at_save = machine_vm_clock_ns(m);
    machine_resume_vcpus(m);
    assert_true(machine_is_running(m));

    /* Run on: more ticks, different memory. */
    unsigned long later;
    do {
        read_line(&c, line, sizeof(line));
    } while (!is_tick(line, &later) || later < saved_tick + 5);
    command(&c, "", line, sizeof(line)); /* completes the half command: "su" */
    assert_string_equal(line, "error: unknown command su");
    command(&c, "fill 12 8", line, sizeof(line));
    /* Move the virtqueue indices on, so a restore must put them back. */
    command(&c, "disk write 0 2 6", line, sizeof(line));
    assert_string_equal(line, "ok");
    command(&c, "disk write 0 3 7", line, sizeof(line));
    assert_string_equal(line, "ok");
    char sum_after[64];
    command(&c, "sum", sum_after, sizeof(sum_after));
    assert_string_not_equal(sum_after, sum_before);

    /* Load it all back: the guest resumes from the saved tick. */
    assert_int_equal(machine_pause_vcpus(m, &err), 0);
    load_all(m, &s);
    assert_true(machine_vm_clock_ns(m) == clock_at_save);
    c.len = 0;
    machine_resume_vcpus(m);
    read_line(&c, line, sizeof(line));
    unsigned long next;
    assert_true(is_tick(line, &next));
    assert_int_equal(next, saved_tick + 1);
    command(&c, "m", line, sizeof(line)); /* "su" came back with the snapshot */
    assert_string_equal(line, sum_before);
    command(&c, "disk read 0 2", line, sizeof(line)); /* virtio-blk state is consistent */
    assert_memory_equal(line, "disk ", 5);

    /* Broken records are refused by name, before anything changes. */
    assert_int_equal(machine_pause_vcpus(m, &err), 0);
    expect_load_error(vcpu_state_load(m, 0, s.vcpu[0].data, s.vcpu[0].len - 1, &err), &err,
                      "vcpu0");
    expect_load_error(vcpu_state_load(m, 7, s.vcpu[0].data, s.vcpu[0].len, &err), &err,
                      "no such vCPU");
    expect_load_error(vm_state_load(m, s.vm.data, 0, &err), &err, "section PIC_MASTER is missing");
    err = NULL;
    struct device *serial0 = machine_find_device(m, "serial0");
    assert_non_null(serial0);
    expect_load_error(device_load(serial0, s.dev[0].data, s.dev[0].len + 1, &err), &err, "serial0");
    machine_resume_vcpus(m);
    command(&c, "disks", line, sizeof(line)); /* the guest still answers */
    assert_string_equal(line, "disks 1");

    /* system_reset reboots the guest from scratch: banner, then tick 1. */
    assert_int_equal(machine_system_reset(m, &err), 0);
    do {
        read_line(&c, line, sizeof(line));
    } while (strcmp(line, "snapvm guest ready") != 0);
    read_line(&c, line, sizeof(line));
    assert_string_equal(line, "tick 1");
    command(&c, "disk read 0 1", line, sizeof(line)); /* the driver set up again */
    assert_memory_equal(line, "disk ", 5);

    free_saved(m, &s);
    close(c.fd);
    machine_request_quit(m);
    machine_free(m);
    vm_config_free(&cfg);
    unlink(img);
    rmdir(dir);
}

static void test_pause_nests(void **state)
{
    (void)state;
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
        skip();
    }
    char *argv[] = {"snapvm", "-m", "16", "-serial", "null", NULL};
    struct vm_config cfg;
    struct error *err = NULL;
    vm_config_init(&cfg);
    assert_int_equal(vm_config_parse(&cfg, 5, argv, &err), 0);
    struct machine *m = machine_new(&cfg, &err);
    assert_non_null(m);
    assert_int_equal(machine_start(m, &err), 0);
    assert_string_equal(run_state_name(machine_run_state(m)), "running");
    assert_int_equal(machine_stop(m, &err), 0);
    assert_string_equal(run_state_name(machine_run_state(m)), "paused");
    /* A snapshot's pause over a stopped VM: cont during it is honoured at its end. */
    assert_int_equal(machine_snapshot_pause(m, RUN_STATE_SAVE_VM, &err), 0);
    assert_string_equal(run_state_name(machine_run_state(m)), "save-vm");
    assert_int_equal(machine_system_reset(m, &err), -1); /* busy saving */
    assert_non_null(strstr(err->message, "busy with a snapshot"));
    error_free(err);
    err = NULL;
    assert_int_equal(machine_cont(m, &err), 0);
    assert_false(machine_is_running(m));
    machine_snapshot_resume(m, NULL);
    assert_true(machine_is_running(m));
    /* ... and stop during one over a running VM. */
    assert_int_equal(machine_snapshot_pause(m, RUN_STATE_RESTORE_VM, &err), 0);
    assert_int_equal(machine_stop(m, &err), 0);
    machine_snapshot_resume(m, NULL);
    assert_string_equal(run_state_name(machine_run_state(m)), "paused");
    /* A half-loaded VM stays stopped; cont is refused until a reset. */
    assert_int_equal(machine_snapshot_pause(m, RUN_STATE_RESTORE_VM, &err), 0);
    machine_snapshot_resume(m, "reading guest RAM: Input/output error");
    assert_string_equal(run_state_name(machine_run_state(m)), "restore-vm");
    assert_int_equal(machine_cont(m, &err), -1);
    assert_non_null(strstr(err->message, "half-loaded"));
    assert_non_null(strstr(err->message, "Input/output error"));
    error_free(err);
    err = NULL;
    assert_int_equal(machine_snapshot_pause(m, RUN_STATE_SAVE_VM, &err), -1);
    error_free(err);
    err = NULL;
    assert_int_equal(machine_system_reset(m, &err), 0);
    assert_string_equal(run_state_name(machine_run_state(m)), "paused");
    assert_false(machine_is_running(m)); /* still stopped by the user */
    uint64_t c1 = machine_vm_clock_ns(m);
    usleep(30000);
    assert_true(machine_vm_clock_ns(m) == c1); /* the VM clock stands still */
    assert_int_equal(machine_cont(m, &err), 0);
    assert_true(machine_is_running(m));
    usleep(30000);
    assert_true(machine_vm_clock_ns(m) > c1);
    assert_int_equal(machine_system_reset(m, &err), 0);
    assert_true(machine_is_running(m));
    assert_false(run_state_transition_allowed(RUN_STATE_RESTORE_FAILED, RUN_STATE_RUNNING));
    assert_false(run_state_transition_allowed(RUN_STATE_SHUTDOWN, RUN_STATE_RUNNING));
    machine_request_quit(m);
    assert_string_equal(run_state_name(machine_run_state(m)), "shutdown");
    assert_int_equal(machine_run(m), 0);
    machine_free(m);
    vm_config_free(&cfg);
}

static bool page_dirty(const uint64_t *bm, uint64_t page)
{
    return bm[page / 64] & (1ULL << (page % 64));
}

/* A ring-3 fill marks exactly the pages it wrote; a disk read is tracked too. */
static void test_dirty_tracking(void **state)
{
    (void)state;
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
        skip();
    }
    char dir[] = "/tmp/snapvm-dirty-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sock[128], serial[160];
    snprintf(sock, sizeof(sock), "%s/serial.sock", dir);
    snprintf(serial, sizeof(serial), "unix:%s,server=on,wait=off", sock);
    char *argv[] = {"snapvm", "-m", "16", "-serial", serial, NULL};
    struct vm_config cfg;
    struct error *err = NULL;
    vm_config_init(&cfg);
    assert_int_equal(vm_config_parse(&cfg, 5, argv, &err), 0);
    struct machine *m = machine_new(&cfg, &err);
    assert_non_null(m);
    struct serial_client c = {.len = 0};
    c.fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, sock);
    assert_int_equal(connect(c.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(machine_start(m, &err), 0);
    /* wait=off: output before the back end accepted us is dropped, so
     * wait for a tick rather than for the banner. */
    char line[256];
    unsigned long t;
    do {
        read_line(&c, line, sizeof(line));
    } while (!is_tick(line, &t));

    size_t words = machine_dirty_bitmap_words(m);
    assert_int_equal(words, (16 << 20) / 4096 / 64);
    uint64_t *bm = calloc(words, sizeof(uint64_t));
    assert_int_equal(machine_dirty_log_start(m, &err), 0);
    assert_int_equal(machine_dirty_log_start(m, &err), -1); /* already on */
    error_free(err);
    err = NULL;
    assert_int_equal(machine_dirty_log_sync(m, bm, &err), 0);
    memset(bm, 0, words * sizeof(uint64_t));
    command(&c, "fill 3 1", line, sizeof(line)); /* data region: [2 MiB, 3 MiB) */
    assert_string_equal(line, "ok");
    assert_int_equal(machine_dirty_log_sync(m, bm, &err), 0);
    for (uint64_t p = 512; p < 768; p++) {
        assert_true(page_dirty(bm, p));
    }
    for (uint64_t p = 768; p < 4096; p++) {
        assert_false(page_dirty(bm, p));
    }
    /* Sync cleared them: nothing in the data region since. */
    memset(bm, 0, words * sizeof(uint64_t));
    assert_int_equal(machine_dirty_log_sync(m, bm, &err), 0);
    for (uint64_t p = 512; p < 4096; p++) {
        assert_false(page_dirty(bm, p));
    }
    machine_dirty_log_stop(m);
    assert_int_equal(machine_dirty_log_sync(m, bm, &err), -1);
    error_free(err);
    free(bm);
    close(c.fd);
    machine_request_quit(m);
    machine_free(m);
    vm_config_free(&cfg);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_roundtrip_on_running_guest),
            cmocka_unit_test(test_pause_nests),
            cmocka_unit_test(test_dirty_tracking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
