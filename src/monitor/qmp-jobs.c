/*
 * QMP commands over background jobs: query-jobs, job-cancel, job-dismiss,
 * job-finalize.  The rules (which status accepts which verb) live in
 * src/job; these handlers only translate.
 */
#include "job/job.h"
#include "monitor/commands.h"
#include "monitor/monitor-int.h"

static const char *arg_id(json_t *args)
{
    return json_string_value(json_object_get(args, "id"));
}

static json_t *qmp_query_jobs(struct qmp_request *req, json_t *args, struct error **errp)
{
    (void)args, (void)errp;
    return job_manager_query(qmp_request_jobs(req));
}

static json_t *qmp_job_cancel(struct qmp_request *req, json_t *args, struct error **errp)
{
    job_manager_cancel(qmp_request_jobs(req), arg_id(args), errp);
    return NULL;
}

static json_t *qmp_job_dismiss(struct qmp_request *req, json_t *args, struct error **errp)
{
    job_manager_dismiss(qmp_request_jobs(req), arg_id(args), errp);
    return NULL;
}

static json_t *qmp_job_finalize(struct qmp_request *req, json_t *args, struct error **errp)
{
    job_manager_finalize(qmp_request_jobs(req), arg_id(args), errp);
    return NULL;
}

const struct qmp_command qmp_job_commands[] = {
        {"query-jobs", qmp_query_jobs},
        {"job-cancel", qmp_job_cancel},
        {"job-dismiss", qmp_job_dismiss},
        {"job-finalize", qmp_job_finalize},
        {NULL, NULL},
};
