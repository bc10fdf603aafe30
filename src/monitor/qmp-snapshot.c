/*
 * The monitor's face of whole-VM snapshots: the seed's savevm/loadvm/delvm
 * (deferred replies: the caller waits, nobody else does), QEMU 6.0's
 * snapshot-save/-load/-delete jobs, query-snapshots, and the HMP commands
 * savevm, loadvm, delvm and info snapshots.
 *
 * Every operation runs on a worker thread (its own, or its job's); the
 * monitor thread only checks arguments, claims the machine's snapshot slot
 * (one snapshot operation at a time) and returns.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/block.h"
#include "job/job.h"
#include "machine/machine.h"
#include "monitor/commands.h"
#include "monitor/qapi-commands.h"
#include "monitor/qmp.h"
#include "snapshot/snapshot.h"
#include "util/buf.h"
#include "util/size.h"

enum snapshot_op {
    OP_SAVE,
    OP_LOAD,
    OP_DELETE,
};

struct snapshot_call {
    struct machine *machine;
    enum snapshot_op op;
    json_t *args; /* the call's own copy of its arguments: the strings below point into it */
    struct snapshot_request req;
    const char *names[SNAPSHOT_MAX_NODES];
    const char *tag; /* into args: whole, never cut (the snapshot layer checks it) */
    bool hmp;
    struct job *job; /* job API */
    bool claimed;    /* holds the machine's snapshot slot */
};

/* ---- building a call from arguments ---- */

static int take_names(struct snapshot_call *call, json_t *list, const char *arg,
                      struct error **errp)
{
    if (!list) {
        return 0;
    }
    if (json_array_size(list) > SNAPSHOT_MAX_NODES) {
        error_setg(errp, "'%s' lists more than %d nodes", arg, SNAPSHOT_MAX_NODES);
        return -1;
    }
    size_t i;
    json_t *name;
    json_array_foreach(list, i, name)
    {
        call->names[i] = json_string_value(name);
    }
    call->req.nodes.names = call->names;
    call->req.nodes.count = json_array_size(list);
    return 0;
}

static int claim(struct snapshot_call *call, struct error **errp)
{
    if (machine_snapshot_claim(call->machine, errp) < 0) {
        return -1;
    }
    call->claimed = true;
    return 0;
}

static void release(struct snapshot_call *call)
{
    if (call->claimed) {
        call->claimed = false;
        machine_snapshot_release(call->machine);
    }
}

static void call_free(struct snapshot_call *call)
{
    release(call);
    json_decref(call->args);
    free(call);
}

/*
 * A call from the typed arguments (borrowed: copied here, since the call
 * outlives the request's message).  `list` is `exclude` (seed API) or
 * `devices` (job API), a validated array of strings, or NULL.
 */
static struct snapshot_call *call_new(struct qmp_request *req, enum snapshot_op op,
                                      enum snapshot_api api, const char *tag, const char *vmstate,
                                      json_t *list, struct error **errp)
{
    struct machine *m = qmp_request_machine(req);
    if (!m) {
        error_setg(errp, "This monitor has no machine");
        return NULL;
    }
    struct snapshot_call *call = calloc(1, sizeof(*call));
    if (!call) {
        abort();
    }
    call->machine = m;
    call->op = op;
    /* '*': an absent argument stays absent (an absent list is not an empty one). */
    call->args = json_pack("{s:s, s:s*, s:O*}", "tag", tag, "vmstate", vmstate, "list", list);
    if (!call->args) {
        error_setg(errp, "snapshot arguments are not valid UTF-8");
        call_free(call);
        return NULL;
    }
    call->req.api = api;
    call->tag = json_string_value(json_object_get(call->args, "tag"));
    call->req.tag = call->tag;
    call->req.vmstate = json_string_value(json_object_get(call->args, "vmstate"));
    const char *list_arg = api == SNAPSHOT_API_SEED ? "exclude" : "devices";
    if (take_names(call, json_object_get(call->args, "list"), list_arg, errp) < 0) {
        call_free(call);
        return NULL;
    }
    return call;
}

/* ---- running a call ---- */

static void progress_set_total(void *opaque, uint64_t total)
{
    struct snapshot_call *call = opaque;
    if (call->job) {
        job_progress_set_total(call->job, total);
    }
}

static void progress_advance(void *opaque, uint64_t bytes)
{
    struct snapshot_call *call = opaque;
    if (call->job) {
        job_progress_update(call->job, bytes); /* a delta, as QEMU's */
    }
}

static bool progress_cancelled(void *opaque)
{
    struct snapshot_call *call = opaque;
    return call->job && job_is_cancelled(call->job);
}

static int call_run(struct snapshot_call *call, json_t **result, struct error **errp)
{
    struct snapshot_progress progress = {
            .set_total = progress_set_total,
            .advance = progress_advance,
            .cancelled = progress_cancelled,
            .opaque = call,
    };
    int rc;
    switch (call->op) {
    case OP_SAVE:
        rc = vm_snapshot_save(call->machine, &call->req, &progress, result, errp);
        break;
    case OP_LOAD:
        rc = vm_snapshot_load(call->machine, &call->req, &progress, result, errp);
        break;
    default:
        rc = vm_snapshot_delete(call->machine, &call->req, result, errp);
        break;
    }
    release(call);
    return rc;
}

/* HMP output is built in a byte_buf, a printf at a time. */
static void buf_printf(struct byte_buf *b, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static void buf_printf(struct byte_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *piece = NULL;
    if (vasprintf(&piece, fmt, ap) < 0) {
        abort();
    }
    va_end(ap);
    buf_append(b, piece, strlen(piece));
    free(piece);
}

/* What HMP prints for a finished call: nothing, as QEMU, except for delvm's misses. */
static json_t *hmp_output(struct snapshot_call *call, json_t *result)
{
    json_t *missing = json_object_get(result, "missing");
    if (call->op != OP_DELETE || json_array_size(missing) == 0) {
        return json_string("");
    }
    struct byte_buf text;
    buf_init(&text);
    buf_printf(&text, "Snapshot '%s' was not on: ", call->tag);
    size_t i;
    json_t *name;
    json_array_foreach(missing, i, name)
    {
        buf_printf(&text, "%s%s", i ? ", " : "", json_string_value(name));
    }
    buf_printf(&text, "\r\n");
    json_t *out = json_stringn((const char *)text.data, text.len);
    buf_free(&text);
    return out;
}

static json_t *seed_worker(struct qmp_request *req, void *opaque, struct error **errp)
{
    (void)req;
    struct snapshot_call *call = opaque;
    json_t *result = NULL;
    if (call_run(call, &result, errp) == 0 && call->hmp) {
        json_t *text = hmp_output(call, result);
        json_decref(result);
        result = text;
    }
    call_free(call);
    return result;
}

/* Claim the machine's snapshot slot and run the call on a thread of its own. */
static json_t *start_deferred(struct qmp_request *req, struct snapshot_call *call,
                              struct error **errp)
{
    if (!call) {
        return NULL;
    }
    if (claim(call, errp) < 0) {
        call_free(call);
        return NULL;
    }
    qmp_request_run_in_thread(req, seed_worker, call);
    return NULL;
}

/* ---- the seed API ---- */

json_t *qmp_savevm(struct qmp_request *req, const struct qapi_args_savevm *args,
                   struct error **errp)
{
    return start_deferred(req,
                          call_new(req, OP_SAVE, SNAPSHOT_API_SEED, args->tag, args->vmstate,
                                   args->exclude, errp),
                          errp);
}

json_t *qmp_loadvm(struct qmp_request *req, const struct qapi_args_loadvm *args,
                   struct error **errp)
{
    return start_deferred(req,
                          call_new(req, OP_LOAD, SNAPSHOT_API_SEED, args->tag, args->vmstate,
                                   args->exclude, errp),
                          errp);
}

json_t *qmp_delvm(struct qmp_request *req, const struct qapi_args_delvm *args, struct error **errp)
{
    return start_deferred(
            req, call_new(req, OP_DELETE, SNAPSHOT_API_SEED, args->tag, NULL, args->exclude, errp),
            errp);
}

/* ---- the job API ---- */

static int job_run(struct job *job, void *opaque, struct error **errp)
{
    struct snapshot_call *call = opaque;
    call->job = job;
    json_t *result = NULL;
    int rc = call_run(call, &result, errp);
    json_decref(result);
    return rc;
}

static void job_finished(struct job *job, void *opaque, const struct error *err)
{
    (void)job;
    (void)err;
    call_free(opaque);
}

static const struct job_driver snapshot_job_driver = {
        .run = job_run,
        .finished = job_finished,
};

static const char *const job_types[] = {
        [OP_SAVE] = "snapshot-save",
        [OP_LOAD] = "snapshot-load",
        [OP_DELETE] = "snapshot-delete",
};

static json_t *start_job(struct qmp_request *req, enum snapshot_op op, const char *id,
                         const char *tag, const char *vmstate, json_t *devices, json_t *exclude,
                         struct error **errp)
{
    enum snapshot_api api = SNAPSHOT_API_JOB;
    json_t *list = devices;
    if (!devices) {
        /* snapvm's extension of the job API: without `devices`, the seed's
         * rules choose the nodes (every writable top-level node minus
         * `exclude`) and the default vmstate node, so that a client gets a
         * job's progress with savevm's selection and errors (snapvm-ctl). */
        api = SNAPSHOT_API_SEED;
        list = exclude;
    } else if (exclude) {
        error_setg(errp, "'devices' and 'exclude' cannot be used together");
        return NULL;
    }
    struct snapshot_call *call = call_new(req, op, api, tag, vmstate, list, errp);
    if (!call) {
        return NULL;
    }
    if (claim(call, errp) < 0) {
        call_free(call);
        return NULL;
    }
    /* QEMU keeps snapshot jobs "concluded" until job-dismiss. */
    struct job *job = job_create(qmp_request_jobs(req), id, job_types[op], &snapshot_job_driver,
                                 call, JOB_MANUAL_DISMISS, errp);
    if (!job) {
        call_free(call);
        return NULL;
    }
    /* On a failed start the driver's finished() has freed the call. */
    job_start(job, NULL);
    return NULL;
}

json_t *qmp_snapshot_save(struct qmp_request *req, const struct qapi_args_snapshot_save *args,
                          struct error **errp)
{
    return start_job(req, OP_SAVE, args->job_id, args->tag, args->vmstate, args->devices,
                     args->exclude, errp);
}

json_t *qmp_snapshot_load(struct qmp_request *req, const struct qapi_args_snapshot_load *args,
                          struct error **errp)
{
    return start_job(req, OP_LOAD, args->job_id, args->tag, args->vmstate, args->devices,
                     args->exclude, errp);
}

json_t *qmp_snapshot_delete(struct qmp_request *req, const struct qapi_args_snapshot_delete *args,
                            struct error **errp)
{
    return start_job(req, OP_DELETE, args->job_id, args->tag, NULL, args->devices, args->exclude,
                     errp);
}

static json_t *query_snapshots_worker(struct qmp_request *req, void *opaque, struct error **errp)
{
    (void)opaque;
    return vm_snapshot_query(qmp_request_machine(req), errp);
}

/* It reads every snapshot's vmstate header and description: not on the monitor thread. */
json_t *qmp_query_snapshots(struct qmp_request *req, struct error **errp)
{
    if (!qmp_request_machine(req)) {
        error_setg(errp, "This monitor has no machine");
        return NULL;
    }
    qmp_request_run_in_thread(req, query_snapshots_worker, NULL);
    return NULL;
}

/* ---- HMP ---- */

static json_t *hmp_call(struct qmp_request *req, enum snapshot_op op, const char *tag, bool replace,
                        struct error **errp)
{
    struct snapshot_call *call = call_new(req, op, SNAPSHOT_API_SEED, tag, NULL, NULL, errp);
    if (call) {
        call->hmp = true;
        call->req.replace = replace;
        call->req.origin = SNAPSHOT_ORIGIN_HMP; /* errors suggest only what HMP can do */
    }
    return start_deferred(req, call, errp);
}

/*
 * The one tag argument of savevm/loadvm/delvm, parsed as QEMU's monitor
 * does (a word or a "quoted string") and checked whole before anything is
 * done: NULL with *errp set, or a malloc'd tag (NULL and no error: none
 * given, which only savevm allows).
 */
static char *hmp_tag(const char *cmd, const char *args, bool required, struct error **errp)
{
    char *tag = NULL;
    if (hmp_parse_words(cmd, args, required ? 1 : 0, 1, &tag, errp) < 0) {
        return NULL;
    }
    if (tag && hmp_check_tag(cmd, tag, errp) < 0) {
        free(tag);
        return NULL;
    }
    return tag;
}

static json_t *hmp_tag_call(struct qmp_request *req, enum snapshot_op op, const char *cmd,
                            const char *args, struct error **errp)
{
    struct error *err = NULL;
    char *tag = hmp_tag(cmd, args, op != OP_SAVE, &err);
    if (err) {
        error_propagate(errp, err);
        return NULL;
    }
    char stamp[64];
    if (!tag) {
        /* As QEMU: a name from the date and time. */
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(stamp, sizeof(stamp), "vm-%Y%m%d%H%M%S", &tm);
    }
    json_t *ret = hmp_call(req, op, tag ? tag : stamp, op == OP_SAVE, errp);
    free(tag);
    return ret;
}

static json_t *hmp_savevm(struct qmp_request *req, const char *args, struct error **errp)
{
    return hmp_tag_call(req, OP_SAVE, "savevm", args, errp);
}

static json_t *hmp_loadvm(struct qmp_request *req, const char *args, struct error **errp)
{
    return hmp_tag_call(req, OP_LOAD, "loadvm", args, errp);
}

static json_t *hmp_delvm(struct qmp_request *req, const char *args, struct error **errp)
{
    return hmp_tag_call(req, OP_DELETE, "delvm", args, errp);
}

/* QEMU's size_to_str(): three significant digits, the next unit from 1000 of one. */
static void qemu_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    int i = 0;
    double limit = 1000.0;
    while (i < 6 && (double)bytes >= limit) {
        i++;
        limit *= 1024.0;
    }
    snprintf(buf, len, "%0.3g %sB", (double)bytes / (double)(1ull << (i * 10)), suffixes[i]);
}

/* One line of QEMU's snapshot table (bdrv_snapshot_dump); NULL id: the header. */
static void dump_snapshot(struct byte_buf *text, const char *id, const char *tag,
                          uint64_t vm_state_size, uint64_t date_sec, uint64_t vm_clock_nsec)
{
    if (!id) {
        buf_printf(text, "%-10s%-17s%8s%20s%13s%11s\r\n", "ID", "TAG", "VM SIZE", "DATE",
                   "VM CLOCK", "ICOUNT");
        return;
    }
    char size[32], date[32] = "", clock[32];
    qemu_size(vm_state_size, size, sizeof(size));
    time_t secs = (time_t)date_sec;
    struct tm tm;
    if (localtime_r(&secs, &tm)) {
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
    }
    uint64_t s = vm_clock_nsec / 1000000000ull;
    snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(s / 3600), (int)(s / 60 % 60),
             (int)(s % 60), (int)(vm_clock_nsec / 1000000 % 1000));
    /* ICOUNT stays blank: it exists only under record/replay, which snapvm lacks. */
    buf_printf(text, "%-9s %-16s %8s%20s%13s%11s\r\n", id, tag, size, date, clock, "");
}

static bool tag_listed(json_t *tags, const char *tag)
{
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t)
    {
        if (!strcmp(json_string_value(t), tag)) {
            return true;
        }
    }
    return false;
}

/*
 * QEMU's "info snapshots": the snapshots a loadvm TAG would load, then, per
 * node, the snapshots on it that are not among them.  QEMU calls the first
 * "present on all disks"; snapvm's are those whose recorded node set is
 * whole (query-snapshots' `loadable`), so a snapshot that leaves out a
 * varstore by design is listed there, and a half-deleted one is partial.
 * QEMU names a partial section by its BlockBackend, which is '' for
 * -blockdev nodes; snapvm names the node.  Reads every snapshot table, so it
 * runs on a worker thread.
 */
static json_t *info_snapshots_worker(struct qmp_request *req, void *opaque, struct error **errp)
{
    (void)opaque;
    struct machine *m = qmp_request_machine(req);
    json_t *list = vm_snapshot_query(m, errp);
    if (!list) {
        return NULL;
    }
    json_t *global = json_array();
    size_t i;
    json_t *snap;
    json_array_foreach(list, i, snap)
    {
        if (json_is_true(json_object_get(snap, "loadable"))) {
            json_array_append(global, json_object_get(snap, "tag"));
        }
    }
    struct byte_buf partial;
    buf_init(&partial);
    bool any = false;
    struct block_graph *graph = machine_block_graph(m);
    for (struct block_node *n = graph ? block_graph_next(graph, NULL) : NULL; n;
         n = block_graph_next(graph, n)) {
        struct block_snapshot_info *sn = NULL;
        size_t count = 0;
        if (!block_node_can_snapshot(n)) {
            continue;
        }
        if (block_snapshot_list(n, &sn, &count, errp) < 0) {
            error_prepend(errp, "node '%s'", block_node_name(n));
            buf_free(&partial);
            json_decref(global);
            json_decref(list);
            return NULL;
        }
        any = any || count > 0;
        bool header = false;
        for (size_t k = 0; k < count; k++) {
            if (tag_listed(global, sn[k].name)) {
                continue;
            }
            if (!header) {
                buf_printf(&partial, "\r\nList of partial (non-loadable) snapshots on '%s':\r\n",
                           block_node_name(n));
                dump_snapshot(&partial, NULL, NULL, 0, 0, 0);
                header = true;
            }
            dump_snapshot(&partial, sn[k].id, sn[k].name, sn[k].vm_state_size, sn[k].date_sec,
                          sn[k].vm_clock_nsec);
        }
        free(sn);
    }
    json_t *out;
    if (!any) {
        out = json_string("There is no snapshot available.\r\n");
    } else {
        struct byte_buf text;
        buf_init(&text);
        buf_printf(&text, "List of snapshots present on all disks:\r\n");
        if (json_array_size(global)) {
            dump_snapshot(&text, NULL, NULL, 0, 0, 0);
            json_array_foreach(list, i, snap)
            {
                if (json_is_true(json_object_get(snap, "loadable"))) {
                    /* As QEMU: the id differs from disk to disk, so it is "--". */
                    dump_snapshot(
                            &text, "--", json_string_value(json_object_get(snap, "tag")),
                            (uint64_t)json_integer_value(json_object_get(snap, "vm-state-size")),
                            (uint64_t)json_integer_value(json_object_get(snap, "date-sec")),
                            (uint64_t)json_integer_value(json_object_get(snap, "vm-clock-nsec")));
                }
            }
        } else {
            buf_printf(&text, "None\r\n");
        }
        buf_append(&text, partial.data, partial.len);
        out = json_stringn((const char *)text.data, text.len);
        buf_free(&text);
    }
    buf_free(&partial);
    json_decref(global);
    json_decref(list);
    return out;
}

static json_t *hmp_info_snapshots(struct qmp_request *req, const char *args, struct error **errp)
{
    (void)args;
    if (!qmp_request_machine(req)) {
        error_setg(errp, "This monitor has no machine");
        return NULL;
    }
    qmp_request_run_in_thread(req, info_snapshots_worker, NULL);
    return NULL;
}

const struct hmp_command hmp_snapshot_commands[] = {
        /* QEMU's help texts (hmp-commands.hx), with snapvm's HMP savevm rule added. */
        {"savevm", "tag",
         "save a VM snapshot. If no tag is provided, a new snapshot is created (an existing tag "
         "is replaced)",
         hmp_savevm},
        {"loadvm", "tag", "restore a VM snapshot from its tag", hmp_loadvm},
        {"delvm", "tag", "delete a VM snapshot from its tag", hmp_delvm},
        {"info snapshots", "", "show the currently saved VM snapshots", hmp_info_snapshots},
        {NULL, NULL, NULL, NULL},
};
