/*
 * snapvm's entry point: parse the command line, daemonize if asked, build
 * the machine, start it, and run until quit.  Signals: SIGINT, SIGTERM and
 * SIGHUP are blocked in every thread and read by machine_run() through a
 * signalfd, so a shutdown always goes through the same clean path (vCPUs
 * stopped, disks flushed, image locks released).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "machine/cmdline.h"
#include "machine/machine.h"
#include "monitor/monitor.h"
#include "snapshot/snapshot.h"
#include "util/error.h"
#include "util/log.h"

static int write_pidfile(const char *path, struct error **errp)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        error_setg_errno(errp, errno, "-pidfile: cannot create '%s'", path);
        return -1;
    }
    fprintf(f, "%d\n", (int)getpid());
    if (fclose(f) != 0) {
        error_setg_errno(errp, errno, "-pidfile: cannot write '%s'", path);
        return -1;
    }
    return 0;
}

/*
 * -daemonize: fork before any thread exists.  The parent waits on a pipe
 * until the child reports that the machine is up (one byte) or exits (EOF),
 * so set-up errors still reach the user's terminal with exit status 1 (or,
 * with -D, the log file, which the parent then names).  Once up, the
 * daemon's stdio is /dev/null, and its messages go to the -D file or, with
 * no -D, to syslog: a daemon's fatal error is never silently lost.
 */
static int daemonize_start(int *ready_fd, const char *logfile)
{
    int p[2];
    if (pipe(p) < 0) {
        log_error("pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork: %s", strerror(errno));
        return -1;
    }
    if (pid > 0) {
        close(p[1]);
        char c;
        ssize_t n = read(p[0], &c, 1);
        if (n != 1 && logfile) {
            /* fd 2 is the log file already: say so on the terminal */
            dprintf(STDOUT_FILENO, "snapvm: set-up failed; see %s\n", logfile);
        }
        _exit(n == 1 ? 0 : 1);
    }
    close(p[0]);
    setsid();
    *ready_fd = p[1];
    return 0;
}

static void daemonize_done(int ready_fd, bool logfile)
{
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        if (!logfile) {
            dup2(null, STDERR_FILENO); /* with -D, fd 2 stays the log file */
        }
        close(null);
    }
    if (!logfile) {
        log_use_syslog();
    }
    if (write(ready_fd, "1", 1) != 1) {
        /* the parent is gone; nothing to tell */
    }
    close(ready_fd);
}

static void block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* The machine's events (STOP, RESUME, ...) go out as QMP events. */
static void machine_event_to_monitor(void *opaque, const char *event, json_t *data)
{
    monitor_emit_event(opaque, event, data);
}

/* -loadvm TAG: the whole VM state comes from the snapshot before any vCPU runs. */
static int load_initial_snapshot(struct machine *m, const char *tag, struct error **errp)
{
    struct snapshot_request req = {
            .api = SNAPSHOT_API_SEED, .tag = tag, .origin = SNAPSHOT_ORIGIN_CMDLINE};
    json_t *result = NULL;
    /* The monitor is already listening: a QMP savevm must wait its turn. */
    int rc = machine_snapshot_claim(m, errp);
    if (rc == 0) {
        rc = vm_snapshot_load(m, &req, NULL, &result, errp);
        machine_snapshot_release(m);
    }
    if (rc < 0) {
        error_prepend(errp, "-loadvm %s", tag);
        return -1;
    }
    json_decref(result);
    return 0;
}

int main(int argc, char **argv)
{
    struct vm_config cfg;
    struct error *err = NULL;
    vm_config_init(&cfg);
    if (vm_config_parse(&cfg, argc, argv, &err) < 0) {
        error_report_and_free(err);
        vm_config_free(&cfg);
        return 1;
    }
    if (cfg.help || cfg.version) {
        fputs(cfg.help ? vm_config_usage() : "snapvm version 0.1.0\n", stdout);
        vm_config_free(&cfg);
        return 0;
    }
    if (cfg.logfile && log_open_file(cfg.logfile, &err) < 0) {
        error_report_and_free(err);
        vm_config_free(&cfg);
        return 1;
    }
    int ready_fd = -1;
    if (cfg.daemonize && daemonize_start(&ready_fd, cfg.logfile) < 0) {
        vm_config_free(&cfg);
        return 1;
    }
    block_signals();

    int status = 1;
    struct monitor *mon = NULL;
    struct machine *m = machine_new(&cfg, &err);
    if (!m) {
        goto out;
    }
    if (json_array_size(cfg.qmp) > 0) {
        mon = monitor_new(m, &err);
        if (!mon) {
            goto out;
        }
        size_t i;
        json_t *spec;
        json_array_foreach(cfg.qmp, i, spec)
        {
            if (monitor_listen(mon, json_string_value(spec), &err) < 0) {
                goto out;
            }
        }
        monitor_set_vm_name(mon, cfg.name); /* query-name */
        machine_set_event_handler(m, machine_event_to_monitor, mon);
        if (monitor_start(mon, &err) < 0) {
            goto out;
        }
    }
    if (cfg.loadvm && load_initial_snapshot(m, cfg.loadvm, &err) < 0) {
        goto out;
    }
    if (cfg.pidfile && write_pidfile(cfg.pidfile, &err) < 0) {
        goto out;
    }
    if (machine_start(m, &err) < 0) {
        goto out;
    }
    if (ready_fd >= 0) {
        daemonize_done(ready_fd, cfg.logfile != NULL);
        ready_fd = -1;
    }
    status = machine_run(m);
out:
    if (err) {
        error_report_and_free(err);
    }
    /* The monitor stops first: no command uses the machine any more, jobs and
     * deferred commands finish, clients get their last replies and events.
     * It is freed after the machine, whose threads may emit events until then. */
    monitor_stop(mon);
    if (m) {
        vm_snapshot_forget(m);
    }
    machine_free(m);
    monitor_free(mon);
    if (cfg.pidfile && status == 0) {
        unlink(cfg.pidfile);
    }
    vm_config_free(&cfg);
    return status;
}
