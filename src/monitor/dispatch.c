/*
 * The QMP dispatcher: from one framed message to one reply.  It owns the
 * protocol rules that come before any handler runs (JSON syntax, the shape
 * of a command message, capabilities negotiation, command lookup, argument
 * validation against the schema) and the shape of replies, including the
 * verbatim echo of "id" and the validation of return values.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/framer.h"
#include "monitor/monitor-int.h"

json_t *qmp_error_reply(json_t *id, struct error *err)
{
    json_t *reply = json_pack("{s:{s:s, s:s}}", "error", "class", error_class_name(err->cls),
                              "desc", err->message);
    if (id) {
        json_object_set(reply, "id", id);
    }
    error_free(err);
    return reply;
}

static json_t *error_reply(json_t *id, enum error_class cls, const char *msg)
{
    struct error *err = NULL;
    error_set(&err, cls, "%s", msg);
    return qmp_error_reply(id, err);
}

void qmp_request_free(struct qmp_request *req)
{
    if (req) {
        json_decref(req->id);
        json_decref(req->ret);
        error_free(req->err);
        free(req->command);
        free(req);
    }
}

/* human-monitor-command answers with text, errors included (as QEMU does). */
static json_t *hmp_result(json_t *ret, struct error *err)
{
    if (err) {
        char *text = NULL;
        if (asprintf(&text, "Error: %s\r\n", err->message) < 0) {
            abort();
        }
        json_t *s = json_string(text);
        free(text);
        error_free(err);
        json_decref(ret);
        return s;
    }
    if (!json_is_string(ret)) {
        json_decref(ret);
        return json_string("");
    }
    return ret;
}

json_t *qmp_request_reply(struct qmp_request *req, json_t *ret, struct error *err)
{
    if (req->hmp) {
        ret = hmp_result(ret, err);
        err = NULL;
    }
    if (!err && !ret) {
        ret = json_object();
    }
    if (!err && qapi_schema_check_return(monitor_schema(req->mon), req->command, ret, &err) < 0) {
        json_decref(ret);
    }
    if (err) {
        return qmp_error_reply(req->id, err);
    }
    json_t *reply = json_pack("{s:o}", "return", ret);
    if (req->id) {
        json_object_set(reply, "id", req->id);
    }
    return reply;
}

/* The envelope: {"execute": str, "arguments"?: object, "id"?: any}. */
static const char *check_envelope(json_t *msg, struct error **errp)
{
    const char *key;
    json_t *v;
    json_object_foreach(msg, key, v)
    {
        if (!strcmp(key, "exec-oob")) {
            error_setg(errp, "QMP input member 'exec-oob' needs capability 'oob', "
                             "which this server does not offer");
            return NULL;
        }
        if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
            error_setg(errp, "QMP input member '%s' is unexpected", key);
            return NULL;
        }
    }
    json_t *exec = json_object_get(msg, "execute");
    if (!exec) {
        error_setg(errp, "QMP input lacks member 'execute'");
        return NULL;
    }
    if (!json_is_string(exec)) {
        error_setg(errp, "QMP input member 'execute' must be a string");
        return NULL;
    }
    json_t *args = json_object_get(msg, "arguments");
    if (args && !json_is_object(args)) {
        error_setg(errp, "QMP input member 'arguments' must be an object");
        return NULL;
    }
    return json_string_value(exec);
}

/* Capabilities negotiation, then lookup; returns the command or NULL. */
static const struct qmp_command *lookup(struct monitor *mon, const char *name, bool negotiated,
                                        struct error **errp)
{
    bool is_caps = !strcmp(name, "qmp_capabilities");
    if (!negotiated && !is_caps) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "Expecting capabilities negotiation with 'qmp_capabilities'");
        return NULL;
    }
    if (negotiated && is_caps) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "Capabilities negotiation is already complete, command ignored");
        return NULL;
    }
    const struct qmp_command *cmd = qmp_find_command(monitor_qmp_tables(mon), name);
    if (!cmd || !qapi_schema_has_command(monitor_schema(mon), name)) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND, "The command %s has not been found", name);
        return NULL;
    }
    return cmd;
}

static json_t *run_command(struct monitor *mon, uint64_t client_id, bool *negotiated, json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    struct error *err = NULL;
    const char *name = check_envelope(msg, &err);
    const struct qmp_command *cmd = name ? lookup(mon, name, *negotiated, &err) : NULL;
    json_t *args = json_object_get(msg, "arguments");
    json_t *empty = json_object();
    if (cmd && qapi_schema_check_args(monitor_schema(mon), name, args ? args : empty, &err) < 0) {
        cmd = NULL;
    }
    if (!cmd) {
        json_decref(empty);
        return qmp_error_reply(id, err);
    }
    struct qmp_request *req = calloc(1, sizeof(*req));
    req->mon = mon;
    req->client_id = client_id;
    req->id = json_incref(id);
    req->command = strdup(name);
    json_t *ret = cmd->handler(req, args ? args : empty, &err);
    json_decref(empty);
    if (req->deferred) {
        /* The request now belongs to whoever completes it. */
        json_decref(ret);
        error_free(err);
        return NULL;
    }
    if (!err && !strcmp(name, "qmp_capabilities")) {
        *negotiated = true;
    }
    json_t *reply = qmp_request_reply(req, ret, err);
    qmp_request_free(req);
    return reply;
}

json_t *qmp_dispatch(struct monitor *mon, uint64_t client_id, bool *negotiated, const char *frame,
                     size_t len)
{
    json_error_t jerr;
    size_t std_len = 0;
    char *std = framer_requote(frame, len, &std_len);
    json_t *msg = json_loadb(std ? std : frame, std ? std_len : len,
                             JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    free(std);
    if (!msg) {
        struct error *err = NULL;
        error_setg(&err, "JSON parse error, %s", jerr.text);
        return qmp_error_reply(NULL, err);
    }
    json_t *reply = json_is_object(msg) ? run_command(mon, client_id, negotiated, msg)
                                        : error_reply(NULL, ERROR_CLASS_GENERIC,
                                                      "QMP input must be a JSON object");
    json_decref(msg);
    return reply;
}

/* ---- the handler-facing request API (qmp.h) ---- */

struct monitor *qmp_request_monitor(struct qmp_request *req)
{
    return req->mon;
}

struct machine *qmp_request_machine(struct qmp_request *req)
{
    return monitor_machine(req->mon);
}

struct job_manager *qmp_request_jobs(struct qmp_request *req)
{
    return monitor_jobs(req->mon);
}

const char *qmp_request_command(struct qmp_request *req)
{
    return req->command;
}

void qmp_request_after_reply(struct qmp_request *req, void (*fn)(void *opaque), void *opaque)
{
    monitor_set_after_reply(req->mon, fn, opaque);
}

void qmp_request_defer(struct qmp_request *req)
{
    if (!req->deferred) {
        req->deferred = true;
        monitor_note_deferred(req->mon);
    }
}

void qmp_request_complete(struct qmp_request *req, json_t *ret, struct error *err)
{
    req->ret = ret;
    req->err = err;
    monitor_queue_completion(req->mon, req);
}

struct thread_call {
    struct qmp_request *req;
    qmp_thread_fn fn;
    void *opaque;
};

static void *thread_call_main(void *arg)
{
    struct thread_call call = *(struct thread_call *)arg;
    free(arg);
    struct error *err = NULL;
    json_t *ret = call.fn(call.req, call.opaque, &err);
    if (err) {
        json_decref(ret);
        ret = NULL;
    }
    qmp_request_complete(call.req, ret, err);
    return NULL;
}

void qmp_request_run_in_thread(struct qmp_request *req, qmp_thread_fn fn, void *opaque)
{
    struct thread_call *call = malloc(sizeof(*call));
    if (!call) {
        abort();
    }
    *call = (struct thread_call){req, fn, opaque};
    qmp_request_defer(req);
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&thread, &attr, thread_call_main, call);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(call);
        struct error *err = NULL;
        error_setg_errno(&err, rc, "%s: cannot create a thread", req->command);
        qmp_request_complete(req, NULL, err);
    }
}
