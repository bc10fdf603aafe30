/*
 * The monitor over real sockets, with real threads: greeting and
 * negotiation, id echo, deferred replies (the client's later commands wait,
 * other clients do not), a client vanishing mid-command, event broadcast,
 * and a real job running seconds on its worker thread while another client
 * is answered promptly.  The test adds two commands of its own (schema
 * entries and handlers) through monitor_new_custom().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "job/job.h"
#include "monitor/commands.h"
#include "monitor/monitor-int.h"
#include "monitor/qapi-commands.h"

/* ---- the test's own commands ---- */

static json_t *sleep_then_answer(struct qmp_request *req, void *opaque, struct error **errp)
{
    (void)req, (void)errp;
    usleep((useconds_t)(intptr_t)opaque * 1000);
    return json_integer((intptr_t)opaque);
}

/* x-test-sleep {ms}: answers after ms milliseconds, from another thread. */
static json_t *qmp_test_sleep(struct qmp_request *req, json_t *args, struct error **errp)
{
    (void)errp;
    intptr_t ms = (intptr_t)json_integer_value(json_object_get(args, "ms"));
    qmp_request_run_in_thread(req, sleep_then_answer, (void *)ms);
    return NULL;
}

static void *failer_main(void *arg)
{
    struct error *err = NULL;
    usleep(100000);
    error_setg(&err, "tag '%s' is not there", "t1");
    qmp_request_complete(arg, NULL, err);
    return NULL;
}

/* HMP "x-fail TAG": fails later, from another thread (a deferred HMP reply). */
static json_t *hmp_test_fail(struct qmp_request *req, const char *args, struct error **errp)
{
    (void)errp;
    assert_string_equal(args, "t1");
    qmp_request_defer(req);
    pthread_t t;
    pthread_create(&t, NULL, failer_main, req);
    pthread_detach(t);
    return NULL;
}

static const struct hmp_command test_hmp_commands[] = {
        {"x-fail", "tag", "fail later", hmp_test_fail},
        {NULL, NULL, NULL, NULL},
};

static const struct hmp_command *const test_hmp_tables[] = {
        hmp_core_commands,
        test_hmp_commands,
        NULL,
};

static int test_job_run(struct job *job, void *opaque, struct error **errp)
{
    (void)errp;
    int ms = (int)(intptr_t)opaque;
    for (int i = 0; i < ms / 10 && !job_is_cancelled(job); i++) {
        usleep(10000);
        job_progress_update(job, 10 * 1024);
    }
    return job_is_cancelled(job) ? -1 : 0;
}

static const struct job_driver test_driver = {test_job_run, NULL};

/* x-test-job {id, ms}: a job that works for ms milliseconds. */
static json_t *qmp_test_job(struct qmp_request *req, json_t *args, struct error **errp)
{
    const char *id = json_string_value(json_object_get(args, "id"));
    intptr_t ms = (intptr_t)json_integer_value(json_object_get(args, "ms"));
    struct job *job = job_create(qmp_request_jobs(req), id, "snapshot-save", &test_driver,
                                 (void *)ms, JOB_MANUAL_DISMISS, errp);
    if (job) {
        job_progress_set_total(job, (uint64_t)ms * 1024); /* known before it runs */
        job_start(job, errp);
    }
    return NULL;
}

static const struct qmp_command test_commands[] = {
        {"x-test-sleep", qmp_test_sleep},
        {"x-test-job", qmp_test_job},
        {NULL, NULL},
};

static const struct qmp_command *const test_tables[] = {
        qapi_commands,
        test_commands,
        NULL,
};

/* snapvm's schema plus the two commands above (test-monitor.json), generated. */
extern const char test_monitor_schema_json[];

static char *test_schema(void)
{
    return strdup(test_monitor_schema_json);
}

/* ---- a minimal client ---- */

struct client {
    int fd;
    char buf[1 << 16];
    size_t len;
};

static char sock_path[108];

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct client *cl_connect(void)
{
    struct client *c = calloc(1, sizeof(*c));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, sock_path);
    c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return c;
}

static void cl_send(struct client *c, const char *text)
{
    assert_int_equal(write(c->fd, text, strlen(text)), (ssize_t)strlen(text));
}

/* The next message (a line), or NULL after timeout_ms. */
static json_t *cl_recv(struct client *c, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        char *eol = memchr(c->buf, '\n', c->len);
        if (eol) {
            size_t n = (size_t)(eol - c->buf) + 1;
            assert_true(n >= 2 && eol[-1] == '\r');
            json_t *msg = json_loadb(c->buf, n - 2, 0, NULL);
            assert_non_null(msg);
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            return msg;
        }
        long left = deadline - now_ms();
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
            return NULL;
        }
        ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        assert_true(n > 0);
        c->len += (size_t)n;
    }
}

static void cl_close(struct client *c)
{
    close(c->fd);
    free(c);
}

/* Send a command, return its reply (events before it are skipped). */
static json_t *cl_cmd(struct client *c, const char *text)
{
    cl_send(c, text);
    for (;;) {
        json_t *msg = cl_recv(c, 5000);
        assert_non_null(msg);
        if (!json_object_get(msg, "event")) {
            return msg;
        }
        json_decref(msg);
    }
}

static struct client *cl_negotiated(void)
{
    struct client *c = cl_connect();
    json_t *greeting = cl_recv(c, 2000);
    json_decref(greeting);
    json_t *r = cl_cmd(c, "{\"execute\": \"qmp_capabilities\"}");
    assert_non_null(json_object_get(r, "return"));
    json_decref(r);
    return c;
}

static const char *error_desc(json_t *reply)
{
    return json_string_value(json_object_get(json_object_get(reply, "error"), "desc"));
}

static const char *error_class(json_t *reply)
{
    return json_string_value(json_object_get(json_object_get(reply, "error"), "class"));
}

static struct monitor *mon;

static int setup(void **state)
{
    (void)state;
    snprintf(sock_path, sizeof(sock_path), "/tmp/snapvm-test-monitor-%d.sock", getpid());
    char *schema = test_schema();
    struct error *err = NULL;
    mon = monitor_new_custom(NULL, schema, test_tables, test_hmp_tables, &err);
    free(schema);
    assert_null(err);
    char spec[160];
    snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", sock_path);
    assert_int_equal(monitor_listen(mon, spec, &err), 0);
    assert_int_equal(monitor_start(mon, &err), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    monitor_free(mon);
    assert_int_equal(access(sock_path, F_OK), -1); /* the socket file is removed */
    return 0;
}

/* ---- tests ---- */

static void test_greeting_and_negotiation(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(stat(sock_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    struct client *c = cl_connect();
    json_t *g = cl_recv(c, 2000);
    json_t *qmp = json_object_get(g, "QMP");
    assert_true(json_is_array(json_object_get(qmp, "capabilities")));
    json_t *ver = json_object_get(json_object_get(qmp, "version"), "qemu");
    assert_true(json_is_integer(json_object_get(ver, "major")));
    assert_true(json_is_integer(json_object_get(ver, "micro")));
    json_decref(g);
    json_t *r = cl_cmd(c, "{\"execute\": \"query-version\", \"id\": 1}");
    assert_string_equal(error_class(r), "CommandNotFound");
    assert_string_equal(error_desc(r),
                        "Expecting capabilities negotiation with 'qmp_capabilities'");
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 1);
    json_decref(r);
    r = cl_cmd(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}");
    assert_string_equal(error_desc(r), "Capability 'oob' is not available");
    json_decref(r);
    r = cl_cmd(c, "{\"execute\": \"qmp_capabilities\"}");
    assert_int_equal(json_object_size(json_object_get(r, "return")), 0);
    json_decref(r);
    r = cl_cmd(c, "{\"execute\": \"qmp_capabilities\"}");
    assert_string_equal(error_class(r), "CommandNotFound");
    json_decref(r);
    r = cl_cmd(c, "{\"execute\": \"no-such-thing\"}");
    assert_string_equal(error_desc(r), "The command no-such-thing has not been found");
    json_decref(r);
    cl_close(c);
}

static void test_id_echo(void **state)
{
    (void)state;
    struct client *c = cl_negotiated();
    static const char *const ids[] = {
            "1", "-2.5", "\"abc\"", "null", "true", "[1, {\"a\": []}]", "{\"x\": {\"y\": \"z\"}}"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char msg[256];
        snprintf(msg, sizeof(msg), "{\"execute\": \"query-version\", \"id\": %s}", ids[i]);
        json_t *r = cl_cmd(c, msg);
        json_t *want = json_loads(ids[i], JSON_DECODE_ANY, NULL);
        assert_true(json_equal(json_object_get(r, "id"), want));
        json_decref(want);
        json_decref(r);
        snprintf(msg, sizeof(msg), "{\"execute\": \"bogus\", \"id\": %s}", ids[i]);
        r = cl_cmd(c, msg);
        want = json_loads(ids[i], JSON_DECODE_ANY, NULL);
        assert_true(json_equal(json_object_get(r, "id"), want));
        json_decref(want);
        json_decref(r);
    }
    cl_close(c);
}

static void test_deferred_keeps_order_and_others_go_on(void **state)
{
    (void)state;
    struct client *a = cl_negotiated();
    struct client *b = cl_negotiated();
    long t0 = now_ms();
    cl_send(a, "{\"execute\": \"x-test-sleep\", \"arguments\": {\"ms\": 600}, \"id\": \"s\"}"
               "{\"execute\": \"query-version\", \"id\": \"v\"}");
    usleep(50000);
    json_t *r = cl_cmd(b, "{\"execute\": \"query-version\", \"id\": \"b\"}");
    assert_true(now_ms() - t0 < 400); /* b did not wait for a's command */
    json_decref(r);
    assert_null(cl_recv(a, 100)); /* a's second command waits for its first */
    r = cl_recv(a, 3000);
    assert_string_equal(json_string_value(json_object_get(r, "id")), "s");
    assert_int_equal(json_integer_value(json_object_get(r, "return")), 600);
    assert_true(now_ms() - t0 >= 600);
    json_decref(r);
    r = cl_recv(a, 3000);
    assert_string_equal(json_string_value(json_object_get(r, "id")), "v");
    json_decref(r);
    cl_close(a);
    cl_close(b);
}

static void test_client_vanishes_mid_command(void **state)
{
    (void)state;
    struct client *a = cl_negotiated();
    cl_send(a, "{\"execute\": \"x-test-sleep\", \"arguments\": {\"ms\": 200}}"
               "{\"execute\": \"query-version\"}");
    usleep(20000);
    cl_close(a);
    usleep(400000); /* the completion arrives for a client that is gone */
    struct client *b = cl_negotiated();
    json_t *r = cl_cmd(b, "{\"execute\": \"query-version\"}");
    assert_non_null(json_object_get(r, "return"));
    json_decref(r);
    cl_close(b);
}

static void test_events_reach_negotiated_clients(void **state)
{
    (void)state;
    struct client *a = cl_negotiated();
    struct client *b = cl_negotiated();
    struct client *raw = cl_connect();
    json_decref(cl_recv(raw, 2000));       /* greeting */
    monitor_emit_event(mon, "STOP", NULL); /* from this (non-monitor) thread */
    struct client *both[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        json_t *ev = cl_recv(both[i], 2000);
        assert_non_null(ev);
        assert_string_equal(json_string_value(json_object_get(ev, "event")), "STOP");
        json_t *ts = json_object_get(ev, "timestamp");
        assert_true(json_integer_value(json_object_get(ts, "seconds")) > 1600000000);
        assert_true(json_is_integer(json_object_get(ts, "microseconds")));
        json_decref(ev);
    }
    assert_null(cl_recv(raw, 200)); /* not negotiated: no events */
    cl_close(a);
    cl_close(b);
    cl_close(raw);
}

static void test_client_that_does_not_read(void **state)
{
    (void)state;
    struct client *lazy = cl_negotiated();
    struct client *b = cl_negotiated();
    /* Far more than the socket buffers hold: the rest waits in the monitor. */
    for (int i = 0; i < 30000; i++) {
        monitor_emit_event(mon, "RESUME", NULL);
    }
    long t = now_ms();
    json_t *r = cl_cmd(b, "{\"execute\": \"query-version\", \"id\": \"b\"}");
    assert_string_equal(json_string_value(json_object_get(r, "id")), "b");
    json_decref(r);
    assert_true(now_ms() - t < 2000);
    /* The lazy client still gets every event, in order, once it reads. */
    int n = 0;
    json_t *ev;
    while (n < 30000 && (ev = cl_recv(lazy, 2000))) {
        assert_string_equal(json_string_value(json_object_get(ev, "event")), "RESUME");
        json_decref(ev);
        n++;
    }
    assert_int_equal(n, 30000);
    cl_close(lazy);
    cl_close(b);
}

/* Stopping the monitor waits for a deferred reply, and delivers it. */
static void test_free_waits_for_deferred_replies(void **state)
{
    (void)state;
    char *schema = test_schema();
    struct monitor *m2 = monitor_new_custom(NULL, schema, test_tables, test_hmp_tables, NULL);
    free(schema);
    char path[128], spec[160];
    snprintf(path, sizeof(path), "/tmp/snapvm-test-monitor2-%d.sock", getpid());
    snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", path);
    assert_int_equal(monitor_listen(m2, spec, NULL), 0);
    assert_int_equal(monitor_start(m2, NULL), 0);
    struct client *c = calloc(1, sizeof(*c));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    json_decref(cl_recv(c, 2000));
    json_decref(cl_cmd(c, "{\"execute\": \"qmp_capabilities\"}"));
    cl_send(c, "{\"execute\": \"x-test-sleep\", \"arguments\": {\"ms\": 300}, \"id\": 9}");
    usleep(50000);
    long t = now_ms();
    monitor_stop(m2);
    assert_true(now_ms() - t >= 200);
    monitor_emit_event(m2, "STOP", NULL); /* late emitters (vCPUs) are harmless */
    monitor_free(m2);
    json_t *r = cl_recv(c, 2000);
    assert_non_null(r);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 9);
    json_decref(r);
    cl_close(c);
}

static bool is_status_event(json_t *ev, const char *id, const char *status)
{
    json_t *data = json_object_get(ev, "data");
    return !strcmp(json_string_value(json_object_get(ev, "event")), "JOB_STATUS_CHANGE") &&
           !strcmp(json_string_value(json_object_get(data, "id")), id) &&
           !strcmp(json_string_value(json_object_get(data, "status")), status);
}

static void test_long_job_does_not_block_monitor(void **state)
{
    (void)state;
    struct client *a = cl_negotiated();
    struct client *b = cl_negotiated();
    struct client *watcher = cl_negotiated();
    json_t *r = cl_cmd(a, "{\"execute\": \"x-test-job\", \"arguments\": "
                          "{\"id\": \"long\", \"ms\": 1500}}");
    assert_non_null(json_object_get(r, "return"));
    json_decref(r);
    long worst = 0;
    for (int i = 0; i < 10; i++) {
        long t = now_ms();
        r = cl_cmd(b, "{\"execute\": \"query-jobs\"}");
        long dt = now_ms() - t;
        worst = dt > worst ? dt : worst;
        json_t *info = json_array_get(json_object_get(r, "return"), 0);
        assert_string_equal(json_string_value(json_object_get(info, "status")), "running");
        assert_int_equal(json_integer_value(json_object_get(info, "total-progress")), 1500 * 1024);
        json_decref(r);
        usleep(50000);
    }
    assert_true(worst < 100);
    r = cl_cmd(b, "{\"execute\": \"job-dismiss\", \"arguments\": {\"id\": \"long\"}}");
    assert_string_equal(error_desc(r),
                        "Job 'long' in state 'running' cannot accept command verb 'dismiss'");
    json_decref(r);
    /* Every client sees every status change, in order, ending in concluded. */
    static const char *const seq[] = {"created", "running", "waiting", "pending", "concluded"};
    for (size_t i = 0; i < 5; i++) {
        json_t *ev = cl_recv(watcher, 5000);
        assert_non_null(ev);
        assert_true(is_status_event(ev, "long", seq[i]));
        json_decref(ev);
    }
    r = cl_cmd(b, "{\"execute\": \"query-jobs\"}");
    json_t *info = json_array_get(json_object_get(r, "return"), 0);
    assert_string_equal(json_string_value(json_object_get(info, "status")), "concluded");
    assert_int_equal(json_integer_value(json_object_get(info, "current-progress")), 1500 * 1024);
    json_decref(r);
    r = cl_cmd(b, "{\"execute\": \"job-dismiss\", \"arguments\": {\"id\": \"long\"}}");
    assert_non_null(json_object_get(r, "return"));
    json_decref(r);
    json_t *ev = cl_recv(watcher, 2000);
    assert_true(is_status_event(ev, "long", "null"));
    json_decref(ev);
    cl_close(a);
    cl_close(b);
    cl_close(watcher);
}

static void test_hmp(void **state)
{
    (void)state;
    struct client *c = cl_negotiated();
    json_t *r = cl_cmd(c, "{\"execute\": \"human-monitor-command\", \"arguments\": "
                          "{\"command-line\": \"frobnicate now\"}}");
    assert_string_equal(json_string_value(json_object_get(r, "return")),
                        "unknown command: 'frobnicate'\r\n");
    json_decref(r);
    r = cl_cmd(c, "{\"execute\": \"human-monitor-command\", \"arguments\": "
                  "{\"command-line\": \"help\"}}");
    assert_non_null(strstr(json_string_value(json_object_get(r, "return")), "help"));
    json_decref(r);
    r = cl_cmd(c, "{\"execute\": \"human-monitor-command\", \"arguments\": "
                  "{\"command-line\": \"x-fail  t1 \"}}");
    assert_string_equal(json_string_value(json_object_get(r, "return")),
                        "Error: tag 't1' is not there\r\n");
    json_decref(r);
    r = cl_cmd(c, "{\"execute\": \"human-monitor-command\", \"arguments\": {}}");
    assert_string_equal(error_desc(r), "Parameter 'command-line' is missing");
    json_decref(r);
    cl_close(c);
}

static void expect_listen_error(const char *spec, const char *words)
{
    struct error *err = NULL;
    assert_int_equal(monitor_listen(mon, spec, &err), -1);
    if (!strstr(err->message, words)) {
        fail_msg("'%s': '%s' lacks '%s'", spec, err->message, words);
    }
    error_free(err);
}

static void test_listen_specs(void **state)
{
    (void)state;
    expect_listen_error("unix:/tmp/x.sock,server=on,wait=on", "wait=on is not supported");
    expect_listen_error("unix:/tmp/x.sock,server=off,wait=off", "server=on");
    expect_listen_error("unix:/tmp/x.sock,server=on,bogus=1", "bogus");
    expect_listen_error("tcp:127.0.0.1,server=on,wait=off", "tcp:HOST:PORT");
    expect_listen_error("udp:1,server=on,wait=off", "unix:PATH or tcp:HOST:PORT");
    expect_listen_error("unix:/nonexistent-dir/x.sock,server=on,wait=off", "cannot bind");
    char live[160];
    snprintf(live, sizeof(live), "unix:%s,server=on,wait=off", sock_path);
    expect_listen_error(live, "another process is listening");
    /* A TCP listener added while the monitor runs serves at once. */
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(probe, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(probe, (struct sockaddr *)&sa, &len), 0);
    close(probe);
    char spec[64];
    snprintf(spec, sizeof(spec), "tcp:127.0.0.1:%d,server,nowait", ntohs(sa.sin_port));
    assert_int_equal(monitor_listen(mon, spec, NULL), 0);
    struct client *c = calloc(1, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    json_t *g = cl_recv(c, 2000);
    assert_non_null(json_object_get(g, "QMP"));
    json_decref(g);
    cl_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_greeting_and_negotiation),
            cmocka_unit_test(test_id_echo),
            cmocka_unit_test(test_deferred_keeps_order_and_others_go_on),
            cmocka_unit_test(test_client_vanishes_mid_command),
            cmocka_unit_test(test_events_reach_negotiated_clients),
            cmocka_unit_test(test_long_job_does_not_block_monitor),
            cmocka_unit_test(test_hmp),
            cmocka_unit_test(test_listen_specs),
            cmocka_unit_test(test_client_that_does_not_read),
            cmocka_unit_test(test_free_waits_for_deferred_replies),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
