/*
 * Background jobs with QEMU's JobStatus life cycle (qapi/job.json):
 * a job is created, runs its driver's run() on a worker thread of its own,
 * and then waits, becomes pending, is finalized and concludes; a failed or
 * cancelled job aborts and concludes with an error.  Every status change is
 * reported through the manager's event callback (the monitor turns it into
 * JOB_STATUS_CHANGE).  Jobs finalize and are dismissed automatically unless
 * created with JOB_MANUAL_FINALIZE / JOB_MANUAL_DISMISS, which then wait for
 * job-finalize / job-dismiss.
 *
 * Usage (e.g. snapshot-save on the monitor thread):
 *
 *     struct job *job = job_create(jobs, id, "snapshot-save", &save_driver, ctx,
 *                                  JOB_MANUAL_DISMISS, errp);
 *     if (!job || job_start(job, errp) < 0) ...
 *
 * and in save_driver.run(), on the worker thread:
 *
 *     job_progress_set_total(job, bytes);
 *     while (...) { if (job_is_cancelled(job)) { error_setg(errp, ...); return -1; }
 *                   ...; job_progress_update(job, bytes_just_written); }
 *
 * Thread safety: every function may be called from any thread.  A `struct
 * job *` is valid for its creator until job_start() returns (or until
 * job_create's caller drops it after a failed start), and inside the
 * driver's callbacks; after that the job may be dismissed and freed at any
 * time, so refer to it by id.
 */
#ifndef SNAPVM_JOB_JOB_H
#define SNAPVM_JOB_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

/* Values and names as QEMU's JobStatus. */
enum job_status {
    JOB_STATUS_UNDEFINED,
    JOB_STATUS_CREATED,
    JOB_STATUS_RUNNING,
    JOB_STATUS_PAUSED,
    JOB_STATUS_READY,
    JOB_STATUS_STANDBY,
    JOB_STATUS_WAITING,
    JOB_STATUS_PENDING,
    JOB_STATUS_ABORTING,
    JOB_STATUS_CONCLUDED,
    JOB_STATUS_NULL,
    JOB_STATUS__MAX,
};
const char *job_status_name(enum job_status status);
/* Whether the life cycle allows going from `from` to `to`. */
bool job_transition_allowed(enum job_status from, enum job_status to);

struct job;
struct job_manager;

struct job_driver {
    /*
     * The work, on the job's worker thread.  Return 0, or -1 with *errp set
     * (its message becomes the job's "error").  Poll job_is_cancelled().
     */
    int (*run)(struct job *job, void *opaque, struct error **errp);
    /*
     * Optional: called once the job has concluded (succeeded, failed or was
     * cancelled), on the thread that concluded it, with the job's error
     * (NULL on success).  Free `opaque` here; complete a deferred QMP reply
     * here.  The job is still valid during the call.
     */
    void (*finished)(struct job *job, void *opaque, const struct error *err);
};

#define JOB_MANUAL_FINALIZE 0x1u /* wait in "pending" for job-finalize */
#define JOB_MANUAL_DISMISS  0x2u /* stay "concluded" until job-dismiss */

/* Called with every status change, in order, from the thread that made it. */
typedef void (*job_event_fn)(void *opaque, const char *id, enum job_status status);

struct job_manager *job_manager_new(job_event_fn on_event, void *opaque);
/* Cancel every job, wait for their worker threads, and free everything. */
void job_manager_free(struct job_manager *mgr);

/*
 * A new job in state "created".  `id` must be unique among the manager's
 * jobs and well formed (a letter, then letters, digits, '-', '.', '_');
 * `type` is a JobType name ("snapshot-save", ...).
 */
struct job *job_create(struct job_manager *mgr, const char *id, const char *type,
                       const struct job_driver *drv, void *opaque, unsigned flags,
                       struct error **errp);
/*
 * Start the worker thread ("running").  On failure the job is aborted
 * and concluded with the error (the driver's finished() runs).
 */
int job_start(struct job *job, struct error **errp);

const char *job_id(const struct job *job);
bool job_is_cancelled(struct job *job);
/*
 * Progress in bytes (query-jobs' current-progress / total-progress).
 * set_total sets the estimate (it may change at any time, either way);
 * update ADDS `delta` bytes to current-progress, as QEMU's does: pass the
 * bytes done since the last call, not a running total.
 */
void job_progress_set_total(struct job *job, uint64_t total);
void job_progress_update(struct job *job, uint64_t delta);

/* ---- the monitor's side (query-jobs, job-cancel, ...) ---- */

/* A JobInfo array of every job that has not been dismissed. */
json_t *job_manager_query(struct job_manager *mgr);
int job_manager_cancel(struct job_manager *mgr, const char *id, struct error **errp);
int job_manager_dismiss(struct job_manager *mgr, const char *id, struct error **errp);
int job_manager_finalize(struct job_manager *mgr, const char *id, struct error **errp);
/*
 * Wait until job `id` reaches `status` (or is gone, for JOB_STATUS_NULL) or
 * timeout_ms elapses.  Returns 0 when reached, -1 on timeout.  For tests
 * and shutdown, never for the monitor thread.
 */
int job_manager_wait(struct job_manager *mgr, const char *id, enum job_status status,
                     int timeout_ms);

#endif
