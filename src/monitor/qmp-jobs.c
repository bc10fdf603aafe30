/*
 * QMP commands over background jobs: query-jobs, job-cancel, job-dismiss,
 * job-finalize.  The rules (which status accepts which verb) live in
 * src/job; these handlers only translate.
 */
#include "job/job.h"
#include "monitor/monitor-int.h"
#include "monitor/qapi-commands.h"

json_t *qmp_query_jobs(struct qmp_request *req, struct error **errp)
{
    (void)errp;
    return job_manager_query(qmp_request_jobs(req));
}

json_t *qmp_job_cancel(struct qmp_request *req, const struct qapi_args_job_cancel *args,
                       struct error **errp)
{
    job_manager_cancel(qmp_request_jobs(req), args->id, errp);
    return NULL;
}

json_t *qmp_job_dismiss(struct qmp_request *req, const struct qapi_args_job_dismiss *args,
                        struct error **errp)
{
    job_manager_dismiss(qmp_request_jobs(req), args->id, errp);
    return NULL;
}

json_t *qmp_job_finalize(struct qmp_request *req, const struct qapi_args_job_finalize *args,
                         struct error **errp)
{
    job_manager_finalize(qmp_request_jobs(req), args->id, errp);
    return NULL;
}
