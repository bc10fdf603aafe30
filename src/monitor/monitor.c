/*
 * The QMP server: listening sockets, clients, the monitor thread and its
 * epoll loop, output buffering, event broadcast, and the hand-over of
 * deferred replies from worker threads.  What a message means is
 * dispatch.c's business; this file only moves bytes and keeps order.
 *
 * Everything about clients is touched by the monitor thread alone.  Other
 * threads talk to it through two queues (events, completed requests) under
 * `lock`, and an eventfd that wakes the loop.  No socket operation blocks:
 * output that the peer does not take yet waits in the client's buffer.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "job/job.h"
#include "monitor/framer.h"
#include "monitor/monitor-int.h"
#include "monitor/monitor-version.h"
#include "util/log.h"

#define MAX_OUTPUT       (64u << 20) /* a client that reads nothing is dropped */
#define MAX_INPUT_BUSY   (2u << 20)  /* stop reading a busy client past this */
#define FLUSH_AT_EXIT_MS 1000

enum watch_kind { WATCH_WAKE, WATCH_LISTENER, WATCH_CLIENT };

/* First member of everything registered with epoll. */
struct watch {
    enum watch_kind kind;
};

struct listener {
    struct watch w;
    int fd;
    char *unix_path; /* removed at exit */
    struct listener *next;
};

struct client {
    struct watch w;
    uint64_t id;
    int fd;
    bool negotiated;
    bool busy;    /* a deferred reply is outstanding */
    bool eof;     /* the peer will send nothing more */
    bool closing; /* freed at the end of the loop iteration */
    uint32_t events;
    struct framer in;
    struct byte_buf out;
    size_t out_off;
    struct client *next;
};

struct monitor {
    struct machine *machine;
    struct qapi_schema *schema;
    const struct qmp_command *const *qmp_tables;
    const struct hmp_command *const *hmp_tables;
    struct job_manager *jobs;
    char *vm_name;                     /* -name, or NULL */
    void (*after_reply)(void *opaque); /* qmp_request_after_reply(), monitor thread only */
    void *after_reply_opaque;
    int epfd;
    struct watch wake;
    int wakefd;
    pthread_t thread;
    bool started;
    bool stopping; /* tells the thread to exit */
    bool stopped;  /* monitor_stop() has run */
    struct listener *listeners;
    struct client *clients;
    uint64_t next_client_id;
    pthread_mutex_t lock; /* guards the queues and the count below */
    json_t *events;       /* messages waiting for the monitor thread */
    struct qmp_request *completions, **completions_tail;
    int outstanding;     /* deferred requests not completed yet */
    pthread_cond_t done; /* signalled when `outstanding` drops */
};

/* ---- accessors (monitor-int.h) ---- */

const struct qapi_schema *monitor_schema(struct monitor *mon)
{
    return mon->schema;
}

const struct qmp_command *const *monitor_qmp_tables(struct monitor *mon)
{
    return mon->qmp_tables;
}

const struct hmp_command *const *monitor_hmp_tables(struct monitor *mon)
{
    return mon->hmp_tables;
}

struct machine *monitor_machine(struct monitor *mon)
{
    return mon->machine;
}

struct job_manager *monitor_jobs(struct monitor *mon)
{
    return mon->jobs;
}

void monitor_set_vm_name(struct monitor *mon, const char *name)
{
    free(mon->vm_name);
    mon->vm_name = name ? strdup(name) : NULL;
}

const char *monitor_vm_name(struct monitor *mon)
{
    return mon->vm_name;
}

static void wake(struct monitor *mon)
{
    uint64_t one = 1;
    if (write(mon->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        log_warn("monitor: cannot wake the monitor thread: %s", strerror(errno));
    }
}

static bool on_monitor_thread(struct monitor *mon)
{
    return mon->started && pthread_equal(pthread_self(), mon->thread);
}

/* ---- output ---- */

static void client_close(struct client *c)
{
    c->closing = true;
}

static void set_events(struct monitor *mon, struct client *c, uint32_t events)
{
    if (c->closing || events == c->events) {
        return;
    }
    struct epoll_event ev = {.events = events, .data.ptr = &c->w};
    if (epoll_ctl(mon->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        client_close(c);
        return;
    }
    c->events = events;
}

static void client_flush(struct client *c)
{
    while (!c->closing && c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        if (n <= 0) {
            client_close(c); /* the peer is gone */
            break;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out.len) {
        buf_reset(&c->out);
        c->out_off = 0;
    }
}

/* Which epoll events the client needs now. */
static void client_update(struct monitor *mon, struct client *c)
{
    uint32_t ev = 0;
    if (!c->eof && !(c->busy && framer_buffered(&c->in) > MAX_INPUT_BUSY)) {
        ev |= EPOLLIN;
    }
    if (c->out.len > c->out_off) {
        ev |= EPOLLOUT;
    }
    set_events(mon, c, ev);
    if (c->eof && !c->busy && c->out.len == c->out_off) {
        client_close(c); /* everything it sent is answered */
    }
}

/* Queue one message (stolen) for the client; QMP lines end in CRLF. */
static void client_send(struct client *c, json_t *msg)
{
    char *text = c->closing ? NULL : json_dumps(msg, JSON_ENSURE_ASCII);
    json_decref(msg);
    if (!text) {
        return;
    }
    buf_append(&c->out, text, strlen(text));
    buf_append(&c->out, "\r\n", 2);
    free(text);
    if (c->out.len - c->out_off > MAX_OUTPUT) {
        log_warn("monitor: dropping a QMP client that does not read its replies");
        client_close(c);
        return;
    }
    client_flush(c);
}

static void broadcast(struct monitor *mon, json_t *msg)
{
    for (struct client *c = mon->clients; c; c = c->next) {
        if (c->negotiated && !c->closing) {
            client_send(c, json_incref(msg));
            client_update(mon, c);
        }
    }
    json_decref(msg);
}

/* ---- input ---- */

/* qmp_request_after_reply(): what a command left to do once its reply is queued. */
static void run_after_reply(struct monitor *mon)
{
    void (*fn)(void *) = mon->after_reply;
    mon->after_reply = NULL;
    if (fn) {
        fn(mon->after_reply_opaque);
    }
}

static void drain_events(struct monitor *mon);

static void client_process(struct monitor *mon, struct client *c)
{
    while (!c->busy && !c->closing) {
        const char *frame;
        size_t len;
        struct error *err = NULL;
        enum framer_result r = framer_next(&c->in, &frame, &len, &err);
        if (r == FRAMER_NEED_MORE) {
            break;
        }
        if (r == FRAMER_ERROR) {
            client_send(c, qmp_error_reply(NULL, err));
            continue;
        }
        json_t *reply = qmp_dispatch(mon, c->id, &c->negotiated, frame, len);
        if (reply) {
            /*
             * Events queued by other threads go out first.  A job's
             * JOB_STATUS_CHANGE is queued under the job lock together with
             * the change, so a reply that shows a job concluded (query-jobs)
             * never reaches a client before the event that announced it:
             * a client that saw the reply has the event too.
             */
            drain_events(mon);
            client_send(c, reply);
            run_after_reply(mon);
        } else {
            c->busy = true; /* later commands wait for the deferred reply */
        }
    }
    client_update(mon, c);
}

static void client_readable(struct monitor *mon, struct client *c)
{
    char buf[65536];
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
    }
    if (n < 0) {
        client_close(c);
        return;
    }
    if (n == 0) {
        c->eof = true; /* still answer what it sent before */
    } else {
        framer_append(&c->in, buf, (size_t)n);
    }
    client_process(mon, c);
}

static void client_event(struct monitor *mon, struct client *c, uint32_t events)
{
    if (events & EPOLLIN) {
        client_readable(mon, c);
    }
    if ((events & EPOLLOUT) && !c->closing) {
        client_flush(c);
        client_update(mon, c);
    }
    if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
        client_close(c);
    }
}

/* ---- clients ---- */

static json_t *version_info(void)
{
    return json_pack("{s:{s:i, s:i, s:i}, s:s}", "qemu", "major", SNAPVM_VERSION_MAJOR, "minor",
                     SNAPVM_VERSION_MINOR, "micro", SNAPVM_VERSION_MICRO, "package",
                     "snapvm-" SNAPVM_VERSION);
}

json_t *monitor_version_info(void)
{
    return version_info();
}

static void accept_client(struct monitor *mon, int fd)
{
    struct client *c = calloc(1, sizeof(*c));
    if (!c) {
        abort();
    }
    c->w.kind = WATCH_CLIENT;
    c->id = ++mon->next_client_id;
    c->fd = fd;
    c->events = EPOLLIN;
    framer_init(&c->in);
    buf_init(&c->out);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c->w};
    if (epoll_ctl(mon->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_warn("monitor: cannot watch a new client: %s", strerror(errno));
        c->closing = true;
    }
    c->next = mon->clients;
    mon->clients = c;
    client_send(c, json_pack("{s:{s:o, s:[]}}", "QMP", "version", version_info(), "capabilities"));
    client_update(mon, c);
}

static void listener_event(struct monitor *mon, struct listener *l)
{
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                log_warn("monitor: accept: %s", strerror(errno));
            }
            return;
        }
        accept_client(mon, fd);
    }
}

static void client_free(struct client *c)
{
    close(c->fd);
    framer_destroy(&c->in);
    buf_free(&c->out);
    free(c);
}

static void reap_clients(struct monitor *mon)
{
    struct client **pp = &mon->clients;
    while (*pp) {
        struct client *c = *pp;
        if (c->closing) {
            *pp = c->next;
            client_free(c); /* close() also removes it from epoll */
        } else {
            pp = &c->next;
        }
    }
}

static struct client *find_client(struct monitor *mon, uint64_t id)
{
    for (struct client *c = mon->clients; c; c = c->next) {
        if (c->id == id && !c->closing) {
            return c;
        }
    }
    return NULL;
}

/* ---- cross-thread queues ---- */

static void drain_events(struct monitor *mon)
{
    pthread_mutex_lock(&mon->lock);
    json_t *events = mon->events;
    mon->events = json_array();
    pthread_mutex_unlock(&mon->lock);
    size_t i;
    json_t *msg;
    json_array_foreach(events, i, msg)
    {
        broadcast(mon, json_incref(msg));
    }
    json_decref(events);
}

static void finish_request(struct monitor *mon, struct qmp_request *req)
{
    json_t *reply = qmp_request_reply(req, req->ret, req->err);
    req->ret = NULL;
    req->err = NULL;
    drain_events(mon); /* before the reply: see client_process() */
    struct client *c = find_client(mon, req->client_id);
    if (c) {
        client_send(c, reply);
        c->busy = false;
        client_process(mon, c); /* resume its pipelined commands */
    } else {
        json_decref(reply); /* the client went away meanwhile */
    }
    qmp_request_free(req);
}

static void drain_completions(struct monitor *mon)
{
    pthread_mutex_lock(&mon->lock);
    struct qmp_request *list = mon->completions;
    mon->completions = NULL;
    mon->completions_tail = &mon->completions;
    pthread_mutex_unlock(&mon->lock);
    while (list) {
        struct qmp_request *req = list;
        list = req->next;
        finish_request(mon, req);
    }
}

void monitor_set_after_reply(struct monitor *mon, void (*fn)(void *opaque), void *opaque)
{
    mon->after_reply = fn;
    mon->after_reply_opaque = opaque;
}

void monitor_note_deferred(struct monitor *mon)
{
    pthread_mutex_lock(&mon->lock);
    mon->outstanding++;
    pthread_mutex_unlock(&mon->lock);
}

/*
 * The completing thread touches nothing of `mon` after the unlock: once
 * `outstanding` drops, monitor_free() may go ahead and free it.
 */
void monitor_queue_completion(struct monitor *mon, struct qmp_request *req)
{
    req->next = NULL;
    pthread_mutex_lock(&mon->lock);
    *mon->completions_tail = req;
    mon->completions_tail = &req->next;
    mon->outstanding--;
    wake(mon);
    pthread_cond_broadcast(&mon->done);
    pthread_mutex_unlock(&mon->lock);
}

/* Deferred requests point at the monitor: let them finish (and answer). */
static void wait_outstanding(struct monitor *mon)
{
    pthread_mutex_lock(&mon->lock);
    bool said = false;
    while (mon->outstanding > 0) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 2;
        if (pthread_cond_timedwait(&mon->done, &mon->lock, &deadline) != 0 && !said) {
            log_info("waiting for %d monitor command(s) to finish", mon->outstanding);
            said = true;
        }
    }
    pthread_mutex_unlock(&mon->lock);
}

static json_t *event_message(const char *event, json_t *data)
{
    struct timeval tv;
    json_int_t sec = -1, usec = -1; /* the spec's value when time is unknown */
    if (gettimeofday(&tv, NULL) == 0) {
        sec = tv.tv_sec;
        usec = tv.tv_usec;
    }
    json_t *msg = json_pack("{s:s, s:{s:I, s:I}}", "event", event, "timestamp", "seconds", sec,
                            "microseconds", usec);
    if (data) {
        json_object_set_new(msg, "data", data);
    }
    return msg;
}

void monitor_emit_event(struct monitor *mon, const char *event, json_t *data)
{
    if (!mon) {
        json_decref(data);
        return;
    }
    struct error *err = NULL;
    if (qapi_schema_check_event(mon->schema, event, data, &err) < 0) {
        log_warn("monitor: %s", err->message);
        error_free(err);
    }
    json_t *msg = event_message(event, data);
    if (on_monitor_thread(mon)) {
        drain_events(mon); /* keep the order of events queued by other threads */
        broadcast(mon, msg);
        return;
    }
    pthread_mutex_lock(&mon->lock);
    json_array_append_new(mon->events, msg);
    pthread_mutex_unlock(&mon->lock);
    wake(mon);
}

static void job_event(void *opaque, const char *id, enum job_status status)
{
    monitor_emit_event(opaque, "JOB_STATUS_CHANGE",
                       json_pack("{s:s, s:s}", "id", id, "status", job_status_name(status)));
}

/* ---- the thread ---- */

static void wake_event(struct monitor *mon)
{
    uint64_t n;
    if (read(mon->wakefd, &n, sizeof(n)) < 0 && errno != EAGAIN) {
        log_warn("monitor: eventfd: %s", strerror(errno));
    }
    drain_events(mon);
    drain_completions(mon);
}

static void *monitor_thread(void *arg)
{
    struct monitor *mon = arg;
    struct epoll_event evs[64];
    while (!__atomic_load_n(&mon->stopping, __ATOMIC_ACQUIRE)) {
        int n = epoll_wait(mon->epfd, evs, 64, -1);
        if (n < 0 && errno != EINTR) {
            log_warn("monitor: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            struct watch *w = evs[i].data.ptr;
            if (w->kind == WATCH_WAKE) {
                wake_event(mon);
            } else if (w->kind == WATCH_LISTENER) {
                listener_event(mon, (struct listener *)w);
            } else {
                client_event(mon, (struct client *)w, evs[i].events);
            }
        }
        reap_clients(mon);
    }
    return NULL;
}

/* ---- life cycle ---- */

struct monitor *monitor_new_custom(struct machine *machine, const char *schema_json,
                                   const struct qmp_command *const *qmp_tables,
                                   const struct hmp_command *const *hmp_tables, struct error **errp)
{
    struct qapi_schema *schema = qapi_schema_load(schema_json, errp);
    if (!schema) {
        return NULL;
    }
    struct monitor *mon = calloc(1, sizeof(*mon));
    if (!mon) {
        abort();
    }
    mon->machine = machine;
    mon->schema = schema;
    mon->qmp_tables = qmp_tables;
    mon->hmp_tables = hmp_tables;
    mon->wake.kind = WATCH_WAKE;
    mon->events = json_array();
    mon->completions_tail = &mon->completions;
    pthread_mutex_init(&mon->lock, NULL);
    pthread_cond_init(&mon->done, NULL);
    mon->epfd = epoll_create1(EPOLL_CLOEXEC);
    mon->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &mon->wake};
    if (mon->epfd < 0 || mon->wakefd < 0 ||
        epoll_ctl(mon->epfd, EPOLL_CTL_ADD, mon->wakefd, &ev) < 0) {
        error_setg_errno(errp, errno, "monitor: cannot set up epoll");
        monitor_free(mon);
        return NULL;
    }
    mon->jobs = job_manager_new(job_event, mon);
    return mon;
}

struct monitor *monitor_new(struct machine *machine, struct error **errp)
{
    return monitor_new_custom(machine, qapi_schema_json, qmp_default_tables, hmp_default_tables,
                              errp);
}

int monitor_start(struct monitor *mon, struct error **errp)
{
    int rc = pthread_create(&mon->thread, NULL, monitor_thread, mon);
    if (rc != 0) {
        error_setg_errno(errp, rc, "monitor: cannot create its thread");
        return -1;
    }
    mon->started = true;
    return 0;
}

/* Best effort: give clients the replies still buffered (e.g. quit's). */
static void flush_at_exit(struct monitor *mon)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (struct client *c = mon->clients; c; c = c->next) {
        client_flush(c);
        while (!c->closing && c->out.len > c->out_off) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long left = FLUSH_AT_EXIT_MS - ((now.tv_sec - start.tv_sec) * 1000 +
                                            (now.tv_nsec - start.tv_nsec) / 1000000);
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
            if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
                break;
            }
            client_flush(c);
        }
    }
}

static void free_listeners(struct monitor *mon)
{
    while (mon->listeners) {
        struct listener *l = mon->listeners;
        mon->listeners = l->next;
        close(l->fd);
        if (l->unix_path) {
            unlink(l->unix_path);
            free(l->unix_path);
        }
        free(l);
    }
}

void monitor_stop(struct monitor *mon)
{
    if (!mon || mon->stopped) {
        return;
    }
    mon->stopped = true;
    if (mon->started) {
        __atomic_store_n(&mon->stopping, true, __ATOMIC_RELEASE);
        wake(mon);
        pthread_join(mon->thread, NULL);
        mon->started = false;
    }
    /* Jobs may still emit events and complete requests: let them. */
    job_manager_free(mon->jobs);
    mon->jobs = NULL;
    wait_outstanding(mon);
    drain_events(mon);
    drain_completions(mon);
    flush_at_exit(mon);
    for (struct client *c = mon->clients; c; c = c->next) {
        c->closing = true;
    }
    reap_clients(mon);
    free_listeners(mon);
}

void monitor_free(struct monitor *mon)
{
    if (!mon) {
        return;
    }
    monitor_stop(mon);
    drain_events(mon); /* emitted after the stop: nobody to send them to */
    if (mon->epfd >= 0) {
        close(mon->epfd);
    }
    if (mon->wakefd >= 0) {
        close(mon->wakefd);
    }
    json_decref(mon->events);
    pthread_cond_destroy(&mon->done);
    pthread_mutex_destroy(&mon->lock);
    qapi_schema_free(mon->schema);
    free(mon->vm_name);
    free(mon);
}

int monitor_listen(struct monitor *mon, const char *spec, struct error **errp)
{
    char *unix_path = NULL;
    int fd = qmp_socket_listen(spec, &unix_path, errp);
    if (fd < 0) {
        return -1;
    }
    struct listener *l = calloc(1, sizeof(*l));
    if (!l) {
        abort();
    }
    l->w.kind = WATCH_LISTENER;
    l->fd = fd;
    l->unix_path = unix_path;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->w};
    /* Safe while the thread runs: epoll_ctl is thread-safe, the list is ours. */
    if (epoll_ctl(mon->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        error_setg_errno(errp, errno, "-qmp '%s'", spec);
        close(fd);
        free(unix_path);
        free(l);
        return -1;
    }
    l->next = mon->listeners;
    mon->listeners = l;
    return 0;
}
