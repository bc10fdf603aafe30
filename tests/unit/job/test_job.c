/*
 * Unit tests for the job framework with real worker threads: the status
 * sequences of success, failure and cancellation, manual finalize and
 * dismiss, verb errors, id rules, progress, and shutdown with a live job.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "job/job.h"

struct recorder {
    pthread_mutex_t lock;
    char log[2048]; /* "id:status " for every event */
    int finished;
    char finished_err[256];
};

static void on_event(void *opaque, const char *id, enum job_status status)
{
    struct recorder *r = opaque;
    pthread_mutex_lock(&r->lock);
    size_t n = strlen(r->log);
    snprintf(r->log + n, sizeof(r->log) - n, "%s:%s ", id, job_status_name(status));
    pthread_mutex_unlock(&r->lock);
}

static void finished(struct job *job, void *opaque, const struct error *err)
{
    (void)job;
    struct recorder *r = opaque;
    pthread_mutex_lock(&r->lock);
    r->finished++;
    snprintf(r->finished_err, sizeof(r->finished_err), "%s", err ? err->message : "");
    pthread_mutex_unlock(&r->lock);
}

static int run_ok(struct job *job, void *opaque, struct error **errp)
{
    (void)opaque, (void)errp;
    job_progress_set_total(job, 4096);
    job_progress_update(job, 1024);
    job_progress_update(job, 3072);
    return 0;
}

static int run_fail(struct job *job, void *opaque, struct error **errp)
{
    (void)job, (void)opaque;
    error_setg(errp, "boom");
    return -1;
}

/* Runs until cancelled (at most 10 s). */
static int run_until_cancelled(struct job *job, void *opaque, struct error **errp)
{
    (void)opaque, (void)errp;
    job_progress_set_total(job, 1000);
    for (int i = 0; i < 1000 && !job_is_cancelled(job); i++) {
        job_progress_update(job, 1);
        usleep(10000);
    }
    return job_is_cancelled(job) ? -1 : 0;
}

static const struct job_driver drv_ok = {run_ok, finished};
static const struct job_driver drv_fail = {run_fail, finished};
static const struct job_driver drv_slow = {run_until_cancelled, finished};

static struct recorder *recorder_new(void)
{
    struct recorder *r = calloc(1, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

/* finished() runs just after the job concludes, on the worker thread. */
static void wait_finished(struct recorder *r, int n)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&r->lock);
        int done = r->finished;
        pthread_mutex_unlock(&r->lock);
        if (done >= n) {
            return;
        }
        usleep(10000);
    }
    fail_msg("finished() was not called");
}

static json_t *query_one(struct job_manager *mgr)
{
    json_t *list = job_manager_query(mgr);
    assert_int_equal(json_array_size(list), 1);
    json_t *info = json_incref(json_array_get(list, 0));
    json_decref(list);
    return info;
}

static void test_success_auto(void **state)
{
    (void)state;
    struct recorder *r = recorder_new();
    struct job_manager *mgr = job_manager_new(on_event, r);
    struct job *job = job_create(mgr, "j1", "snapshot-save", &drv_ok, r, 0, NULL);
    assert_non_null(job);
    assert_int_equal(job_start(job, NULL), 0);
    assert_int_equal(job_manager_wait(mgr, "j1", JOB_STATUS_NULL, 5000), 0);
    assert_string_equal(r->log, "j1:created j1:running j1:waiting j1:pending j1:concluded "
                                "j1:null ");
    assert_int_equal(r->finished, 1);
    assert_string_equal(r->finished_err, "");
    json_t *list = job_manager_query(mgr);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    job_manager_free(mgr);
    free(r);
}

static void test_manual_finalize_and_dismiss(void **state)
{
    (void)state;
    struct recorder *r = recorder_new();
    struct job_manager *mgr = job_manager_new(on_event, r);
    struct job *job = job_create(mgr, "j2", "snapshot-save", &drv_ok, r,
                                 JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS, NULL);
    assert_int_equal(job_start(job, NULL), 0);
    assert_int_equal(job_manager_wait(mgr, "j2", JOB_STATUS_PENDING, 5000), 0);
    json_t *info = query_one(mgr);
    assert_string_equal(json_string_value(json_object_get(info, "status")), "pending");
    assert_int_equal(json_integer_value(json_object_get(info, "current-progress")), 4096);
    assert_int_equal(json_integer_value(json_object_get(info, "total-progress")), 4096);
    assert_string_equal(json_string_value(json_object_get(info, "type")), "snapshot-save");
    json_decref(info);
    struct error *err = NULL;
    assert_int_equal(job_manager_dismiss(mgr, "j2", &err), -1);
    assert_string_equal(err->message,
                        "Job 'j2' in state 'pending' cannot accept command verb 'dismiss'");
    error_free(err);
    assert_int_equal(r->finished, 0);
    assert_int_equal(job_manager_finalize(mgr, "j2", NULL), 0);
    info = query_one(mgr);
    assert_string_equal(json_string_value(json_object_get(info, "status")), "concluded");
    assert_null(json_object_get(info, "error"));
    json_decref(info);
    assert_int_equal(r->finished, 1);
    assert_int_equal(job_manager_dismiss(mgr, "j2", NULL), 0);
    assert_string_equal(r->log, "j2:created j2:running j2:waiting j2:pending j2:concluded "
                                "j2:null ");
    err = NULL;
    assert_int_equal(job_manager_dismiss(mgr, "j2", &err), -1);
    assert_string_equal(err->message, "Job 'j2' not found");
    error_free(err);
    job_manager_free(mgr);
    free(r);
}

static void test_failure_sets_error(void **state)
{
    (void)state;
    struct recorder *r = recorder_new();
    struct job_manager *mgr = job_manager_new(on_event, r);
    struct job *job =
            job_create(mgr, "j3", "snapshot-save", &drv_fail, r, JOB_MANUAL_DISMISS, NULL);
    assert_int_equal(job_start(job, NULL), 0);
    assert_int_equal(job_manager_wait(mgr, "j3", JOB_STATUS_CONCLUDED, 5000), 0);
    json_t *info = query_one(mgr);
    assert_string_equal(json_string_value(json_object_get(info, "error")), "boom");
    json_decref(info);
    wait_finished(r, 1);
    assert_string_equal(r->log, "j3:created j3:running j3:aborting j3:concluded ");
    assert_string_equal(r->finished_err, "boom");
    job_manager_free(mgr);
    free(r);
}

static void test_cancel_running(void **state)
{
    (void)state;
    struct recorder *r = recorder_new();
    struct job_manager *mgr = job_manager_new(on_event, r);
    struct job *job =
            job_create(mgr, "j4", "snapshot-save", &drv_slow, r, JOB_MANUAL_DISMISS, NULL);
    assert_int_equal(job_start(job, NULL), 0);
    usleep(50000);
    assert_int_equal(job_manager_cancel(mgr, "j4", NULL), 0);
    assert_int_equal(job_manager_wait(mgr, "j4", JOB_STATUS_CONCLUDED, 5000), 0);
    json_t *info = query_one(mgr);
    assert_string_equal(json_string_value(json_object_get(info, "error")), "Operation canceled");
    assert_true(json_integer_value(json_object_get(info, "current-progress")) > 0);
    json_decref(info);
    struct error *err = NULL;
    assert_int_equal(job_manager_cancel(mgr, "j4", &err), -1);
    assert_string_equal(err->message,
                        "Job 'j4' in state 'concluded' cannot accept command verb 'cancel'");
    error_free(err);
    job_manager_free(mgr);
    free(r);
}

static void test_cancel_before_start(void **state)
{
    (void)state;
    struct recorder *r = recorder_new();
    struct job_manager *mgr = job_manager_new(on_event, r);
    struct job *job = job_create(mgr, "j5", "snapshot-save", &drv_ok, r, 0, NULL);
    assert_non_null(job);
    assert_int_equal(job_manager_cancel(mgr, "j5", NULL), 0);
    assert_string_equal(r->log, "j5:created j5:aborting j5:concluded j5:null ");
    assert_string_equal(r->finished_err, "Operation canceled");
    job_manager_free(mgr);
    free(r);
}

static void test_ids(void **state)
{
    (void)state;
    struct recorder *r = recorder_new();
    struct job_manager *mgr = job_manager_new(on_event, r);
    struct error *err = NULL;
    assert_null(job_create(mgr, "1abc", "snapshot-save", &drv_ok, NULL, 0, &err));
    assert_non_null(strstr(err->message, "Invalid job ID '1abc'"));
    error_free(err);
    err = NULL;
    assert_null(job_create(mgr, "a b", "snapshot-save", &drv_ok, NULL, 0, &err));
    error_free(err);
    err = NULL;
    struct job *job = job_create(mgr, "a-1.b_c", "snapshot-save", &drv_slow, r, 0, NULL);
    assert_non_null(job);
    assert_null(job_create(mgr, "a-1.b_c", "snapshot-save", &drv_ok, NULL, 0, &err));
    assert_string_equal(err->message, "Job ID 'a-1.b_c' already in use");
    error_free(err);
    assert_int_equal(job_start(job, NULL), 0);
    job_manager_free(mgr); /* cancels the running job and waits for it */
    assert_int_equal(r->finished, 1);
    assert_string_equal(r->finished_err, "Operation canceled");
    free(r);
}

static void test_transition_table(void **state)
{
    (void)state;
    assert_true(job_transition_allowed(JOB_STATUS_CREATED, JOB_STATUS_RUNNING));
    assert_true(job_transition_allowed(JOB_STATUS_PENDING, JOB_STATUS_ABORTING));
    assert_false(job_transition_allowed(JOB_STATUS_CONCLUDED, JOB_STATUS_RUNNING));
    assert_false(job_transition_allowed(JOB_STATUS_NULL, JOB_STATUS_CREATED));
    assert_false(job_transition_allowed(JOB_STATUS_RUNNING, JOB_STATUS_CONCLUDED));
    assert_string_equal(job_status_name(JOB_STATUS_STANDBY), "standby");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_success_auto),
            cmocka_unit_test(test_manual_finalize_and_dismiss),
            cmocka_unit_test(test_failure_sets_error),
            cmocka_unit_test(test_cancel_running),
            cmocka_unit_test(test_cancel_before_start),
            cmocka_unit_test(test_ids),
            cmocka_unit_test(test_transition_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
