/*
 * Fault injection for the block layer's host I/O (see fault.h): owns the
 * armed fault, the per-operation counts and the control socket.  It is a
 * test tool compiled into every build, off unless the environment turns it
 * on, so that tests exercise the very binary users run.
 *
 * Spec (SNAPVM_FAULT, or the control socket's "arm" command):
 *
 *   op=write|read|flush|truncate|fallocate|any   which operations match
 *   nth=N          the Nth matching operation (1-based, counted from the
 *                  moment the fault is armed) is the first to fail
 *   errno=E        EIO, ENOSPC, EDQUOT, EROFS, EFBIG, EPERM, EAGAIN or a number
 *   path=SUBSTR    only operations on files whose name contains SUBSTR match
 *                  (optional; SUBSTR cannot contain a comma)
 *   count=K        K consecutive matching operations fail, the Nth to the
 *                  (N+K-1)th (default 1: a one-shot fault); count=0: every
 *                  matching operation from the Nth on fails (a disk that
 *                  stays full or broken)
 *   action=crash   instead of failing, the process dies at the Nth matching
 *                  operation, before doing it (_exit(99): like a kill -9, no
 *                  flush, no cleanup); errno= is then not needed
 *
 * A failed operation does nothing: the system call is not made, the caller
 * sees -1 with that errno, exactly as if the kernel had refused it.
 *
 * Counts: every host I/O is counted per operation, in total and per file
 * (matching or not), from process start or the last "reset".
 * SNAPVM_FAULT_COUNT=FILE writes them at exit as one JSON object:
 *   {"read": N, "write": N, "flush": N, "truncate": N, "fallocate": N,
 *    "matched": N, "injected": N, "armed": BOOL, "last-injected": "...",
 *    "files": {"PATH": {"read": N, ...}, ...}}
 * ("matched": operations that matched the armed spec since it was armed.)
 *
 * Control socket (SNAPVM_FAULT_CTL=PATH, a unix stream socket snapvm
 * listens on; one thread, one client at a time, one command per line, one
 * JSON line back per command):
 *   arm SPEC      arm (replacing any armed fault); the match count restarts
 *                 -> {"ok": true} or {"error": "..."}
 *   disarm        -> {"ok": true}
 *   counts        -> the counts object above
 *   reset         zero the counts (not the armed fault) -> {"ok": true}
 * So a sweep counts one operation's writes by "reset", the operation,
 * "counts"; and fails its Nth write by "arm op=write,nth=N,...", the
 * operation, "disarm".  Not for production: anyone who can reach the socket
 * can fail the VM's I/O; the environment variable is the opt-in.
 */
#include "block/fault.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define FAULT_MAX_FILES 32
#define FAULT_PATH_MAX  256

int fault_active;

struct fault_spec {
    int op; /* enum fault_op, or -1 for any */
    uint64_t nth;
    uint64_t count; /* 0: forever */
    int err;
    bool crash;
    char path[FAULT_PATH_MAX];
};

struct fault_file {
    char path[FAULT_PATH_MAX];
    uint64_t counts[FAULT_OP_COUNT];
};

static const char *const op_names[FAULT_OP_COUNT] = {
        [FAULT_READ] = "read",         [FAULT_WRITE] = "write",         [FAULT_FLUSH] = "flush",
        [FAULT_TRUNCATE] = "truncate", [FAULT_FALLOCATE] = "fallocate",
};

static const struct {
    const char *name;
    int value;
} errno_names[] = {
        {"EIO", EIO},     {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}, {"EROFS", EROFS},
        {"EFBIG", EFBIG}, {"EPERM", EPERM},   {"EAGAIN", EAGAIN},
};

/* Everything below is under `lock` (the hook runs on vCPU, job and monitor threads). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool armed;
static struct fault_spec spec;
static uint64_t matched, injected;
static char last_injected[FAULT_PATH_MAX + 128];
static uint64_t totals[FAULT_OP_COUNT];
static struct fault_file files[FAULT_MAX_FILES];
static size_t nfiles;
static char *count_file;

static int ctl_fd = -1;
static bool ctl_running; /* false in a forked child until the thread is restarted */

static int parse_spec(const char *text, struct fault_spec *out, char *msg, size_t msglen)
{
    struct fault_spec s = {.op = -2, .count = 1};
    bool have_err = false;
    char *copy = strdup(text);
    if (!copy) {
        abort();
    }
    int rc = -1;
    char *save = NULL;
    for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            snprintf(msg, msglen, "'%s' is not key=value", kv);
            goto out;
        }
        *eq = 0;
        const char *k = kv, *v = eq + 1;
        char *end;
        if (!strcmp(k, "op")) {
            s.op = !strcmp(v, "any") ? -1 : -2;
            for (int i = 0; i < FAULT_OP_COUNT; i++) {
                if (!strcmp(v, op_names[i])) {
                    s.op = i;
                }
            }
            if (s.op == -2) {
                snprintf(msg, msglen,
                         "op '%s': expected write, read, flush, truncate, fallocate or any", v);
                goto out;
            }
        } else if (!strcmp(k, "nth") || !strcmp(k, "count")) {
            errno = 0;
            unsigned long long n = strtoull(v, &end, 10);
            if (!*v || *end || errno || *v == '-' || (!strcmp(k, "nth") && n == 0)) {
                snprintf(msg, msglen, "%s '%s': expected a number%s", k, v,
                         !strcmp(k, "nth") ? " >= 1" : "");
                goto out;
            }
            *(!strcmp(k, "nth") ? &s.nth : &s.count) = n;
        } else if (!strcmp(k, "errno")) {
            for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
                if (!strcmp(v, errno_names[i].name)) {
                    s.err = errno_names[i].value;
                }
            }
            if (!s.err) {
                long n = strtol(v, &end, 10);
                if (*v && !*end && n > 0 && n < 4096) {
                    s.err = (int)n;
                }
            }
            if (!s.err) {
                snprintf(msg, msglen,
                         "errno '%s': expected EIO, ENOSPC, EDQUOT, EROFS, EFBIG, "
                         "EPERM, EAGAIN or a positive number",
                         v);
                goto out;
            }
            have_err = true;
        } else if (!strcmp(k, "action")) {
            if (strcmp(v, "fail") && strcmp(v, "crash")) {
                snprintf(msg, msglen, "action '%s': expected fail or crash", v);
                goto out;
            }
            s.crash = !strcmp(v, "crash");
        } else if (!strcmp(k, "path")) {
            if (strlen(v) >= sizeof(s.path)) {
                snprintf(msg, msglen, "path is longer than %d bytes", FAULT_PATH_MAX - 1);
                goto out;
            }
            strcpy(s.path, v);
        } else {
            snprintf(msg, msglen, "unknown key '%s' (op, nth, errno, path, count, action)", k);
            goto out;
        }
    }
    if (s.op == -2 || !s.nth || (!have_err && !s.crash)) {
        snprintf(msg, msglen, "needs op=, nth= and errno= (or action=crash) (got '%s')", text);
        goto out;
    }
    *out = s;
    rc = 0;
out:
    free(copy);
    return rc;
}

static struct fault_file *file_entry(const char *path)
{
    for (size_t i = 0; i < nfiles; i++) {
        if (!strncmp(files[i].path, path, FAULT_PATH_MAX - 1)) {
            return &files[i];
        }
    }
    if (nfiles == FAULT_MAX_FILES) {
        return NULL; /* counted in the totals only */
    }
    struct fault_file *f = &files[nfiles++];
    snprintf(f->path, sizeof(f->path), "%s", path);
    return f;
}

static json_t *op_counts(const uint64_t *c)
{
    json_t *o = json_object();
    for (int i = 0; i < FAULT_OP_COUNT; i++) {
        json_object_set_new(o, op_names[i], json_integer((json_int_t)c[i]));
    }
    return o;
}

/* Caller holds `lock`. */
static json_t *counts_json(void)
{
    json_t *o = op_counts(totals);
    json_object_set_new(o, "matched", json_integer((json_int_t)matched));
    json_object_set_new(o, "injected", json_integer((json_int_t)injected));
    json_object_set_new(o, "armed", json_boolean(armed));
    json_object_set_new(o, "last-injected", json_string(last_injected));
    json_t *fo = json_object();
    for (size_t i = 0; i < nfiles; i++) {
        json_object_set_new(fo, files[i].path, op_counts(files[i].counts));
    }
    json_object_set_new(o, "files", fo);
    return o;
}

static void ctl_serve(int c)
{
    FILE *in = fdopen(c, "r");
    if (!in) {
        close(c);
        return;
    }
    char line[1024];
    while (fgets(line, sizeof(line), in)) {
        line[strcspn(line, "\r\n")] = 0;
        json_t *reply;
        char msg[FAULT_PATH_MAX + 128] = "";
        pthread_mutex_lock(&lock);
        if (!strncmp(line, "arm ", 4)) {
            struct fault_spec s;
            if (parse_spec(line + 4, &s, msg, sizeof(msg)) < 0) {
                reply = json_pack("{ss}", "error", msg);
            } else {
                spec = s;
                armed = true;
                matched = injected = 0;
                last_injected[0] = 0;
                reply = json_pack("{sb}", "ok", 1);
            }
        } else if (!strcmp(line, "disarm")) {
            armed = false;
            reply = json_pack("{sb}", "ok", 1);
        } else if (!strcmp(line, "counts")) {
            reply = counts_json();
        } else if (!strcmp(line, "reset")) {
            memset(totals, 0, sizeof(totals));
            for (size_t i = 0; i < nfiles; i++) {
                memset(files[i].counts, 0, sizeof(files[i].counts));
            }
            reply = json_pack("{sb}", "ok", 1);
        } else {
            reply = json_pack("{ss}", "error", "unknown command (arm SPEC, disarm, counts, reset)");
        }
        pthread_mutex_unlock(&lock);
        char *text = json_dumps(reply, JSON_COMPACT);
        json_decref(reply);
        size_t len = strlen(text);
        text[len++] = '\n'; /* replaces the NUL: written with its length */
        for (size_t done = 0; done < len;) {
            ssize_t n = write(c, text + done, len - done);
            if (n <= 0) {
                break;
            }
            done += (size_t)n;
        }
        free(text);
    }
    fclose(in);
}

static void *ctl_thread(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(ctl_fd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            return NULL;
        }
        ctl_serve(c);
    }
}

/* The thread takes no signals: SIGTERM and friends belong to the main loop. */
static void ctl_start_thread(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    if (pthread_create(&t, NULL, ctl_thread, NULL) == 0) {
        pthread_detach(t);
        ctl_running = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* After fork (-daemonize) the child has no control thread: the next I/O restarts it. */
static void after_fork_child(void)
{
    ctl_running = false;
}

static void write_count_file(void)
{
    pthread_mutex_lock(&lock);
    json_t *o = counts_json();
    pthread_mutex_unlock(&lock);
    if (json_dump_file(o, count_file, JSON_COMPACT) < 0) {
        fprintf(stderr, "snapvm: SNAPVM_FAULT_COUNT: cannot write '%s'\n", count_file);
    }
    json_decref(o);
}

static void ctl_listen(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "snapvm: SNAPVM_FAULT_CTL: socket path '%s' is too long\n", path);
        exit(1);
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 4) < 0) {
        fprintf(stderr, "snapvm: SNAPVM_FAULT_CTL: cannot listen on '%s': %s\n", path,
                strerror(errno));
        exit(1);
    }
    ctl_fd = fd;
    pthread_atfork(NULL, NULL, after_fork_child);
    ctl_start_thread();
}

/* Runs before main(): the controls are part of the process's environment. */
__attribute__((constructor)) static void fault_init(void)
{
    const char *f = getenv("SNAPVM_FAULT");
    const char *c = getenv("SNAPVM_FAULT_COUNT");
    const char *s = getenv("SNAPVM_FAULT_CTL");
    if (f && *f) {
        char msg[FAULT_PATH_MAX + 128];
        if (parse_spec(f, &spec, msg, sizeof(msg)) < 0) {
            fprintf(stderr, "snapvm: SNAPVM_FAULT: %s\n", msg);
            exit(1);
        }
        armed = true;
    }
    if (c && *c) {
        count_file = strdup(c);
        atexit(write_count_file);
    }
    if (s && *s) {
        ctl_listen(s);
    }
    fault_active = (f && *f) || (c && *c) || (s && *s);
}

int fault_io_slow(enum fault_op op, const char *path, uint64_t offset, uint64_t len)
{
    if (!path) {
        path = "?";
    }
    pthread_mutex_lock(&lock);
    if (ctl_fd >= 0 && !ctl_running) {
        ctl_start_thread();
    }
    totals[op]++;
    struct fault_file *fe = file_entry(path);
    if (fe) {
        fe->counts[op]++;
    }
    int err = 0;
    if (armed && (spec.op == -1 || spec.op == (int)op) &&
        (!spec.path[0] || strstr(path, spec.path))) {
        matched++;
        if (matched >= spec.nth && (spec.count == 0 || matched - spec.nth < spec.count)) {
            if (spec.crash) {
                _exit(99); /* a kill -9 just before this I/O: nothing flushed, nothing closed */
            }
            err = spec.err;
            injected++;
            snprintf(last_injected, sizeof(last_injected),
                     "%s #%llu (%llu bytes at %llu) of %s: %s", op_names[op],
                     (unsigned long long)matched, (unsigned long long)len,
                     (unsigned long long)offset, path, strerror(err));
        }
    }
    pthread_mutex_unlock(&lock);
    return err;
}
