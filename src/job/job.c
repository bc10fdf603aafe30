/*
 * The job framework (see job.h): the status machine, the worker threads,
 * progress, cancellation, and the job list behind query-jobs.
 *
 * One mutex per manager guards every job's status and the list; status
 * changes and their events happen under it, so events leave in the order
 * the changes were made.  A job is reference-counted: the list holds one
 * reference until the job reaches "null", its worker thread another until
 * it exits, and a driver's finished() callback runs (without the lock)
 * under a temporary one.
 */
#include "job/job.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct job {
    struct job_manager *mgr;
    char *id;
    char *type;
    const struct job_driver *drv;
    void *opaque;
    unsigned flags;
    enum job_status status;
    bool cancelled;
    bool finished_called;
    uint64_t current; /* atomics: updated by the worker without the lock */
    uint64_t total;
    struct error *err;
    int refs;
    struct job *next;
};

struct job_manager {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled on every status change and worker exit */
    job_event_fn on_event;
    void *opaque;
    struct job *jobs; /* creation order */
    int workers;      /* worker threads that have not finished */
};

static const char *const status_names[JOB_STATUS__MAX] = {
        "undefined", "created", "running",  "paused",    "ready", "standby",
        "waiting",   "pending", "aborting", "concluded", "null",
};

const char *job_status_name(enum job_status status)
{
    return status < JOB_STATUS__MAX ? status_names[status] : "undefined";
}

#define BIT(s) (1u << (s))

/*
 * The life cycle as qapi/job.json describes it: where each status may go.
 * Failure or cancellation leads through "aborting" to "concluded"; success
 * through "waiting" (for the other jobs of a transaction; always alone
 * here) and "pending" (finalization) to "concluded"; "null" is the end.
 */
static const unsigned transitions[JOB_STATUS__MAX] = {
        [JOB_STATUS_UNDEFINED] = BIT(JOB_STATUS_CREATED),
        [JOB_STATUS_CREATED] =
                BIT(JOB_STATUS_RUNNING) | BIT(JOB_STATUS_ABORTING) | BIT(JOB_STATUS_NULL),
        [JOB_STATUS_RUNNING] = BIT(JOB_STATUS_PAUSED) | BIT(JOB_STATUS_READY) |
                               BIT(JOB_STATUS_WAITING) | BIT(JOB_STATUS_ABORTING),
        [JOB_STATUS_PAUSED] = BIT(JOB_STATUS_RUNNING),
        [JOB_STATUS_READY] =
                BIT(JOB_STATUS_STANDBY) | BIT(JOB_STATUS_WAITING) | BIT(JOB_STATUS_ABORTING),
        [JOB_STATUS_STANDBY] = BIT(JOB_STATUS_READY),
        [JOB_STATUS_WAITING] = BIT(JOB_STATUS_PENDING) | BIT(JOB_STATUS_ABORTING),
        [JOB_STATUS_PENDING] = BIT(JOB_STATUS_CONCLUDED) | BIT(JOB_STATUS_ABORTING),
        [JOB_STATUS_ABORTING] = BIT(JOB_STATUS_CONCLUDED),
        [JOB_STATUS_CONCLUDED] = BIT(JOB_STATUS_NULL),
        [JOB_STATUS_NULL] = 0,
};

bool job_transition_allowed(enum job_status from, enum job_status to)
{
    return from < JOB_STATUS__MAX && to < JOB_STATUS__MAX && (transitions[from] & BIT(to));
}

/* The statuses in which each QMP verb is accepted. */
static const unsigned verb_cancel = BIT(JOB_STATUS_CREATED) | BIT(JOB_STATUS_RUNNING) |
                                    BIT(JOB_STATUS_PAUSED) | BIT(JOB_STATUS_READY) |
                                    BIT(JOB_STATUS_STANDBY) | BIT(JOB_STATUS_WAITING) |
                                    BIT(JOB_STATUS_PENDING);
static const unsigned verb_dismiss = BIT(JOB_STATUS_CONCLUDED);
static const unsigned verb_finalize = BIT(JOB_STATUS_PENDING);

/* ---- manager ---- */

struct job_manager *job_manager_new(job_event_fn on_event, void *opaque)
{
    struct job_manager *mgr = calloc(1, sizeof(*mgr));
    if (!mgr) {
        abort();
    }
    pthread_mutex_init(&mgr->lock, NULL);
    pthread_cond_init(&mgr->cond, NULL);
    mgr->on_event = on_event;
    mgr->opaque = opaque;
    return mgr;
}

static struct job *find_locked(struct job_manager *mgr, const char *id)
{
    for (struct job *j = mgr->jobs; j; j = j->next) {
        if (!strcmp(j->id, id)) {
            return j;
        }
    }
    return NULL;
}

static void unref_locked(struct job *job)
{
    if (--job->refs > 0) {
        return;
    }
    error_free(job->err);
    free(job->id);
    free(job->type);
    free(job);
}

static void unlink_locked(struct job *job)
{
    struct job **pp = &job->mgr->jobs;
    while (*pp != job) {
        pp = &(*pp)->next;
    }
    *pp = job->next;
}

/* Every status change goes through here: check, record, announce. */
static void set_status_locked(struct job *job, enum job_status to)
{
    if (!job_transition_allowed(job->status, to)) {
        abort(); /* a bug in this file, never a user error */
    }
    job->status = to;
    if (job->mgr->on_event) {
        job->mgr->on_event(job->mgr->opaque, job->id, to);
    }
    pthread_cond_broadcast(&job->mgr->cond);
    if (to == JOB_STATUS_NULL) {
        unlink_locked(job);
        unref_locked(job);
    }
}

/*
 * Conclude (from "pending" or "aborting"), tell the driver, and dismiss
 * unless the creator wants job-dismiss.  Drops the lock around finished().
 */
static void conclude_locked(struct job *job)
{
    struct job_manager *mgr = job->mgr;
    set_status_locked(job, JOB_STATUS_CONCLUDED);
    job->refs++; /* job-dismiss may run while the lock is dropped */
    if (job->drv->finished && !job->finished_called) {
        job->finished_called = true;
        pthread_mutex_unlock(&mgr->lock);
        job->drv->finished(job, job->opaque, job->err);
        pthread_mutex_lock(&mgr->lock);
    }
    if (!(job->flags & JOB_MANUAL_DISMISS) && job->status == JOB_STATUS_CONCLUDED) {
        set_status_locked(job, JOB_STATUS_NULL);
    }
    unref_locked(job);
}

static void abort_locked(struct job *job, struct error *err)
{
    if (!err && job->cancelled) {
        error_setg(&err, "%s", strerror(ECANCELED));
    }
    error_propagate(&job->err, err);
    set_status_locked(job, JOB_STATUS_ABORTING);
    conclude_locked(job);
}

static void finalize_locked(struct job *job)
{
    conclude_locked(job);
}

/* The work is done: through waiting and pending, finalized unless manual. */
static void succeed_locked(struct job *job)
{
    set_status_locked(job, JOB_STATUS_WAITING);
    set_status_locked(job, JOB_STATUS_PENDING);
    if (!(job->flags & JOB_MANUAL_FINALIZE)) {
        finalize_locked(job);
    }
}

/* ---- jobs ---- */

static bool id_wellformed(const char *id)
{
    if (!isalpha((unsigned char)id[0])) {
        return false;
    }
    for (const char *p = id + 1; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("-._", *p)) {
            return false;
        }
    }
    return true;
}

struct job *job_create(struct job_manager *mgr, const char *id, const char *type,
                       const struct job_driver *drv, void *opaque, unsigned flags,
                       struct error **errp)
{
    if (!id || !id_wellformed(id)) {
        error_setg(errp,
                   "Invalid job ID '%s': use a letter followed by letters, digits, '-', '.' "
                   "or '_'",
                   id ? id : "");
        return NULL;
    }
    pthread_mutex_lock(&mgr->lock);
    if (find_locked(mgr, id)) {
        pthread_mutex_unlock(&mgr->lock);
        error_setg(errp, "Job ID '%s' already in use", id);
        return NULL;
    }
    struct job *job = calloc(1, sizeof(*job));
    if (!job) {
        abort();
    }
    *job = (struct job){.mgr = mgr,
                        .id = strdup(id),
                        .type = strdup(type),
                        .drv = drv,
                        .opaque = opaque,
                        .flags = flags,
                        .refs = 1};
    struct job **pp = &mgr->jobs;
    while (*pp) {
        pp = &(*pp)->next;
    }
    *pp = job;
    set_status_locked(job, JOB_STATUS_CREATED);
    pthread_mutex_unlock(&mgr->lock);
    return job;
}

static void *worker_main(void *arg)
{
    struct job *job = arg;
    struct job_manager *mgr = job->mgr;
    struct error *err = NULL;
    int ret = job->drv->run(job, job->opaque, &err);
    pthread_mutex_lock(&mgr->lock);
    if (ret < 0) {
        if (!err && !job->cancelled) {
            error_setg(&err, "Job '%s' failed", job->id);
        }
        abort_locked(job, err);
    } else {
        error_free(err);
        succeed_locked(job);
    }
    mgr->workers--;
    unref_locked(job);
    pthread_cond_broadcast(&mgr->cond);
    pthread_mutex_unlock(&mgr->lock);
    return NULL;
}

int job_start(struct job *job, struct error **errp)
{
    struct job_manager *mgr = job->mgr;
    pthread_mutex_lock(&mgr->lock);
    if (job->status != JOB_STATUS_CREATED) {
        /* Cancelled before it started: nothing to run. */
        pthread_mutex_unlock(&mgr->lock);
        error_setg(errp, "Job '%s' cannot start: it is %s", job->id, job_status_name(job->status));
        return -1;
    }
    set_status_locked(job, JOB_STATUS_RUNNING);
    job->refs++;
    mgr->workers++;
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&thread, &attr, worker_main, job);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        mgr->workers--;
        job->refs--;
        struct error *err = NULL;
        error_setg_errno(&err, rc, "Job '%s': cannot create its thread", job->id);
        error_setg(errp, "%s", err->message);
        abort_locked(job, err);
        pthread_mutex_unlock(&mgr->lock);
        return -1;
    }
    pthread_mutex_unlock(&mgr->lock);
    return 0;
}

const char *job_id(const struct job *job)
{
    return job->id;
}

bool job_is_cancelled(struct job *job)
{
    return __atomic_load_n(&job->cancelled, __ATOMIC_ACQUIRE);
}

void job_progress_set_total(struct job *job, uint64_t total)
{
    __atomic_store_n(&job->total, total, __ATOMIC_RELAXED);
}

void job_progress_update(struct job *job, uint64_t delta)
{
    __atomic_add_fetch(&job->current, delta, __ATOMIC_RELAXED);
}

/* ---- the monitor's side ---- */

json_t *job_manager_query(struct job_manager *mgr)
{
    json_t *list = json_array();
    pthread_mutex_lock(&mgr->lock);
    for (struct job *j = mgr->jobs; j; j = j->next) {
        json_t *info = json_pack("{s:s, s:s, s:s, s:I, s:I}", "id", j->id, "type", j->type,
                                 "status", job_status_name(j->status), "current-progress",
                                 (json_int_t)__atomic_load_n(&j->current, __ATOMIC_RELAXED),
                                 "total-progress",
                                 (json_int_t)__atomic_load_n(&j->total, __ATOMIC_RELAXED));
        if (j->err) {
            json_object_set_new(info, "error", json_string(j->err->message));
        }
        json_array_append_new(list, info);
    }
    pthread_mutex_unlock(&mgr->lock);
    return list;
}

/* Find job `id` and check that `verb` applies now; returns it locked. */
static struct job *verb_target(struct job_manager *mgr, const char *id, const char *verb,
                               unsigned allowed, struct error **errp)
{
    pthread_mutex_lock(&mgr->lock);
    struct job *job = find_locked(mgr, id);
    if (!job) {
        pthread_mutex_unlock(&mgr->lock);
        error_setg(errp, "Job '%s' not found", id);
        return NULL;
    }
    if (!(allowed & BIT(job->status))) {
        error_setg(errp, "Job '%s' in state '%s' cannot accept command verb '%s'", id,
                   job_status_name(job->status), verb);
        pthread_mutex_unlock(&mgr->lock);
        return NULL;
    }
    return job;
}

static void cancel_locked(struct job *job)
{
    __atomic_store_n(&job->cancelled, true, __ATOMIC_RELEASE);
    /* A running job notices by itself; the others abort right here. */
    if (job->status == JOB_STATUS_CREATED || job->status == JOB_STATUS_PENDING) {
        abort_locked(job, NULL);
    }
}

int job_manager_cancel(struct job_manager *mgr, const char *id, struct error **errp)
{
    struct job *job = verb_target(mgr, id, "cancel", verb_cancel, errp);
    if (!job) {
        return -1;
    }
    cancel_locked(job);
    pthread_mutex_unlock(&mgr->lock);
    return 0;
}

int job_manager_dismiss(struct job_manager *mgr, const char *id, struct error **errp)
{
    struct job *job = verb_target(mgr, id, "dismiss", verb_dismiss, errp);
    if (!job) {
        return -1;
    }
    set_status_locked(job, JOB_STATUS_NULL);
    pthread_mutex_unlock(&mgr->lock);
    return 0;
}

int job_manager_finalize(struct job_manager *mgr, const char *id, struct error **errp)
{
    struct job *job = verb_target(mgr, id, "finalize", verb_finalize, errp);
    if (!job) {
        return -1;
    }
    finalize_locked(job);
    pthread_mutex_unlock(&mgr->lock);
    return 0;
}

static bool reached_locked(struct job_manager *mgr, const char *id, enum job_status status)
{
    struct job *job = find_locked(mgr, id);
    return job ? job->status == status : status == JOB_STATUS_NULL;
}

int job_manager_wait(struct job_manager *mgr, const char *id, enum job_status status,
                     int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&mgr->lock);
    int rc = 0;
    while (!reached_locked(mgr, id, status) && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&mgr->cond, &mgr->lock, &deadline);
    }
    bool ok = reached_locked(mgr, id, status);
    pthread_mutex_unlock(&mgr->lock);
    return ok ? 0 : -1;
}

void job_manager_free(struct job_manager *mgr)
{
    if (!mgr) {
        return;
    }
    pthread_mutex_lock(&mgr->lock);
    /* Restart after each cancel: aborting may drop the lock and the job. */
    for (struct job *j = mgr->jobs; j;) {
        if ((verb_cancel & BIT(j->status)) && !j->cancelled) {
            cancel_locked(j);
            j = mgr->jobs;
        } else {
            j = j->next;
        }
    }
    while (mgr->workers > 0) {
        pthread_cond_wait(&mgr->cond, &mgr->lock);
    }
    while (mgr->jobs) {
        struct job *j = mgr->jobs;
        if (j->status == JOB_STATUS_PENDING) {
            abort_locked(j, NULL);
        }
        if (mgr->jobs == j) {
            set_status_locked(j, JOB_STATUS_NULL);
        }
    }
    pthread_mutex_unlock(&mgr->lock);
    pthread_cond_destroy(&mgr->cond);
    pthread_mutex_destroy(&mgr->lock);
    free(mgr);
}
