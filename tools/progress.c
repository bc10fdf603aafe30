/*
 * Running a snapshot job (snapshot-save, -load, -delete) with its progress.
 * The job's byte progress (query-jobs current-progress / total-progress) is
 * polled every 100 ms, and JOB_STATUS_CHANGE events wake the loop early and
 * give every status the job goes through.  On a terminal the progress is one
 * line redrawn in place (bar, bytes done / total, rate, time left); when
 * stdout is not a terminal it is plain lines: each status change, and the
 * bytes at most once a second; with --json nothing is printed here (the
 * command prints one JSON result).  Ctrl-C cancels the job (job-cancel) and
 * still waits for it to conclude, so the VM is never left mid-operation.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct progress {
    const char *what;
    bool tty, quiet;
    double t0;           /* job started */
    double last_plain;   /* last plain bytes line */
    uint64_t last_done;  /* the bytes it showed */
    bool drawn;          /* a terminal line is on screen */
    char last_event[32]; /* the status it gave last */
};

/* Plain output: one line per status the job's events report, in order. */
static void status_line(struct progress *p, const char *status)
{
    if (p->quiet || p->tty || !status) {
        return;
    }
    printf("%s: %s\n", p->what, status);
    fflush(stdout);
}

/* rate in bytes/s (since the job started) and seconds left */
static bool estimate(struct progress *p, uint64_t done, uint64_t total, double *rate, double *left)
{
    double t = now() - p->t0;
    if (done == 0 || t < 0.05) {
        return false;
    }
    *rate = (double)done / t;
    *left = total > done ? (double)(total - done) / *rate : 0;
    return true;
}

/* Redraw the terminal line in place, cut to the terminal's width: a line
 * that wrapped could not be redrawn with a carriage return. */
static int term_cols(void)
{
    struct winsize ws;
    return ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 ? ws.ws_col : 80;
}

static void draw(struct progress *p, const char *line)
{
    printf("\r\033[K%.*s", term_cols() - 1, line);
    fflush(stdout);
    p->drawn = true;
}

static void show_bytes(struct progress *p, const char *status, uint64_t done, uint64_t total)
{
    if (p->quiet) {
        return;
    }
    if (total == 0) { /* nothing measured yet (or a delete): the status alone */
        if (p->tty) {
            char line[512];
            snprintf(line, sizeof(line), "%s: %s", p->what, status);
            draw(p, line);
        }
        return;
    }
    char d[32], tot[32], r[32] = "", l[32] = "";
    fmt_size(done, d, sizeof(d));
    fmt_size(total, tot, sizeof(tot));
    double rate = 0, left = 0;
    bool have = estimate(p, done, total, &rate, &left);
    if (have) {
        fmt_size((uint64_t)rate, r, sizeof(r));
        fmt_duration(left, l, sizeof(l));
    }
    int pct = (int)(done * 100 / total);
    if (p->tty) {
        /* the numbers first; the bar gets what room is left (24 columns at
         * most, none under 6) */
        char rest[160];
        int n = snprintf(rest, sizeof(rest), " %3d%%  %s / %s", pct, d, tot);
        if (have && n > 0 && (size_t)n < sizeof(rest)) {
            snprintf(rest + n, sizeof(rest) - (size_t)n, "  %s/s  %s left", r, l);
        }
        int room = term_cols() - 1 - (int)strlen(p->what) - 3 - (int)strlen(rest);
        enum { BAR_MAX = 24 };
        int width = room > BAR_MAX ? BAR_MAX : room;
        char bar[BAR_MAX + 4] = ""; /* " [" + width + "]" + NUL */
        if (width >= 6) {
            int fill = pct * width / 100;
            bar[0] = ' ';
            bar[1] = '[';
            for (int i = 0; i < width; i++) {
                bar[2 + i] = i < fill ? '#' : '.';
            }
            bar[2 + width] = ']';
            bar[3 + width] = '\0';
        }
        char line[512];
        snprintf(line, sizeof(line), "%s%s%s", p->what, bar, rest);
        draw(p, line);
        return;
    }
    /* plain lines: when the bytes moved, at most once a second (and the end) */
    double t = now();
    if (done == p->last_done || (t - p->last_plain < 1.0 && done < total)) {
        return;
    }
    p->last_plain = t;
    p->last_done = done;
    printf("%s: %s / %s (%d%%)", p->what, d, tot, pct);
    if (have) {
        printf(", %s/s, %s left", r, l);
    }
    printf("\n");
    fflush(stdout);
}

/* Our job's query-jobs entry, or NULL. */
static json_t *find_job(struct ctl *ctl, const char *id)
{
    json_t *reply = conn_execute(ctl_conn(ctl), "query-jobs", NULL);
    json_t *found = NULL;
    size_t i;
    json_t *job;
    json_array_foreach(json_object_get(reply, "return"), i, job)
    {
        if (!strcmp(json_str(job, "id"), id)) {
            found = json_incref(job);
        }
    }
    json_decref(reply);
    return found;
}

static void handle_event(struct progress *p, json_t *ev, const char *id)
{
    json_t *data = json_object_get(ev, "data");
    const char *name = json_string_value(json_object_get(ev, "event"));
    const char *jid = json_string_value(json_object_get(data, "id"));
    if (name && !strcmp(name, "JOB_STATUS_CHANGE") && jid && !strcmp(jid, id)) {
        const char *status = json_string_value(json_object_get(data, "status"));
        snprintf(p->last_event, sizeof(p->last_event), "%s", status ? status : "");
        status_line(p, status);
    }
}

int run_job(struct ctl *ctl, const char *type, json_t *args, const char *what, json_t **info_out)
{
    static int seq;
    char id[64];
    snprintf(id, sizeof(id), "snapvm-ctl-%d-%d", (int)getpid(), ++seq);
    json_object_set_new(args, "job-id", json_string(id));
    struct progress p = {.what = what, .tty = isatty(STDOUT_FILENO), .quiet = ctl->json};
    p.t0 = now();
    int rc;
    json_t *started = ctl_call(ctl, type, args, &rc);
    if (!started) {
        return rc;
    }
    json_decref(started);

    ctl_catch_sigint(true);
    bool cancelled = false;
    json_t *info = NULL;
    for (;;) {
        json_decref(info);
        info = find_job(ctl, id);
        if (!info) {
            break;
        }
        const char *status = json_str(info, "status");
        show_bytes(&p, status,
                   (uint64_t)json_integer_value(json_object_get(info, "current-progress")),
                   (uint64_t)json_integer_value(json_object_get(info, "total-progress")));
        if (!strcmp(status, "concluded") || !strcmp(status, "null")) {
            break;
        }
        if (ctl_interrupted() && !cancelled) {
            cancelled = true;
            json_t *args2 = json_pack("{s:s}", "id", id);
            json_decref(conn_execute(ctl_conn(ctl), "job-cancel", args2));
            json_decref(args2);
            if (!p.quiet) {
                printf("%s%s: cancelling\n", p.drawn ? "\n" : "", what);
                p.drawn = false;
            }
        }
        json_t *ev = conn_event(ctl_conn(ctl), 100);
        while (ev) {
            handle_event(&p, ev, id);
            json_decref(ev);
            ev = conn_event(ctl_conn(ctl), 0);
        }
        if (conn_closed(ctl_conn(ctl))) {
            break;
        }
    }
    ctl_catch_sigint(false);
    if (p.drawn) {
        printf("\n");
    }
    /* The job's last events may trail the query-jobs reply that showed it
     * concluded: plain output waits a little for them, so that it lists
     * every status the job went through. */
    json_t *ev;
    while ((ev = conn_event(ctl_conn(ctl), 0))) {
        handle_event(&p, ev, id);
        json_decref(ev);
    }
    double until = now() + 2;
    while (info && !p.quiet && !p.tty && strcmp(p.last_event, "concluded") != 0 && now() < until &&
           !conn_closed(ctl_conn(ctl))) {
        if ((ev = conn_event(ctl_conn(ctl), 100)) != NULL) {
            handle_event(&p, ev, id);
            json_decref(ev);
        }
    }
    fflush(stdout);
    if (!info) {
        char msg[160];
        snprintf(msg, sizeof(msg), "job '%s' disappeared before it concluded", id);
        return ctl_report_error(ctl, "GenericError", msg, false);
    }
    json_t *dargs = json_pack("{s:s}", "id", id);
    json_decref(conn_execute(ctl_conn(ctl), "job-dismiss", dargs));
    json_decref(dargs);
    const char *error = json_string_value(json_object_get(info, "error"));
    if (error) {
        rc = ctl_report_error(ctl, "GenericError", error, false);
        json_decref(info);
        return rc;
    }
    json_object_set_new(info, "seconds",
                        json_real((double)(long long)((now() - p.t0) * 1000) / 1000));
    if (info_out) {
        *info_out = info;
    } else {
        json_decref(info);
    }
    return CTL_OK;
}
