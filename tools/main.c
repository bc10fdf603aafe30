/*
 * snapvm-ctl: the command-line client of snapvm.
 *
 *     snapvm-ctl [--qmp ADDRESS] [--json] [-c] COMMAND [ARGS]
 *
 * This file holds the global options, the connection on first use, and the
 * output and error conventions every command shares: results on stdout,
 * errors on stderr as "snapvm-ctl: MESSAGE" with the server's message
 * unchanged (raw QMP commands: "Class: MESSAGE"), exit 0 / 1 (the server
 * said no) / 2 (usage, connection).  The commands are in commands.c.
 */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

struct conn *ctl_conn(struct ctl *ctl)
{
    if (!ctl->conn) {
        if (!ctl->addr) {
            fprintf(stderr, "snapvm-ctl: no QMP socket: give --qmp ADDRESS or set SNAPVM_QMP "
                            "(snapvm-ctl --help)\n");
            exit(CTL_ERR_USAGE);
        }
        ctl->conn = conn_connect(ctl->addr);
    }
    return ctl->conn;
}

int ctl_report_error(struct ctl *ctl, const char *cls, const char *desc, bool raw)
{
    if (ctl->json) {
        json_t *e = json_pack("{s:{s:s, s:s}}", "error", "class", cls ? cls : "GenericError",
                              "desc", desc ? desc : "");
        ctl_print_json(ctl, e);
        json_decref(e);
    }
    fflush(stdout);
    if (raw) {
        fprintf(stderr, "%s: %s\n", cls ? cls : "GenericError", desc ? desc : "");
    } else {
        fprintf(stderr, "snapvm-ctl: %s\n", desc ? desc : "");
    }
    return CTL_ERR_QMP;
}

json_t *ctl_call(struct ctl *ctl, const char *name, json_t *args, int *rc)
{
    json_t *reply = conn_execute(ctl_conn(ctl), name, args);
    json_t *err = json_object_get(reply, "error");
    if (err) {
        *rc = ctl_report_error(ctl, json_string_value(json_object_get(err, "class")),
                               json_string_value(json_object_get(err, "desc")), false);
        json_decref(reply);
        return NULL;
    }
    *rc = CTL_OK;
    json_t *ret = json_incref(json_object_get(reply, "return"));
    json_decref(reply);
    return ret ? ret : json_object();
}

void ctl_print_json(struct ctl *ctl, json_t *value)
{
    char *text = json_dumps(value, (ctl->compact ? JSON_COMPACT : JSON_INDENT(2)) |
                                           JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
    printf("%s\n", text);
    free(text);
    fflush(stdout);
}

static volatile sig_atomic_t interrupted;
static struct sigaction saved_sigint;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

void ctl_catch_sigint(bool on)
{
    if (on) {
        struct sigaction sa = {.sa_handler = on_sigint}; /* no SA_RESTART: waits wake up */
        sigemptyset(&sa.sa_mask);
        interrupted = 0;
        sigaction(SIGINT, &sa, &saved_sigint);
    } else {
        sigaction(SIGINT, &saved_sigint, NULL);
    }
}

bool ctl_interrupted(void)
{
    return interrupted;
}

int ctl_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "snapvm-ctl: %s%s", cmd ? cmd : "", cmd ? ": " : "");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    bool known = cmd && command_find(cmd);
    fprintf(stderr, " (snapvm-ctl %s%s--help)\n", known ? cmd : "", known ? " " : "");
    return CTL_ERR_USAGE;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
            {"qmp", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
            {"compact", no_argument, NULL, 'c'},   {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, 'V'},   {NULL, 0, NULL, 0},
    };
    struct ctl ctl = {.addr = getenv("SNAPVM_QMP")};
    if (ctl.addr && !*ctl.addr) {
        ctl.addr = NULL;
    }
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+:s:ch", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            ctl.addr = optarg;
            break;
        case 'j':
            ctl.json = true;
            break;
        case 'c':
            ctl.compact = true;
            break;
        case 'h':
            program_help(stdout);
            return CTL_OK;
        case 'V':
            printf("snapvm-ctl version " SNAPVM_VERSION "\n");
            return CTL_OK;
        case ':':
            return ctl_usage_error(NULL, "option '%s' needs an argument", argv[optind - 1]);
        default:
            return ctl_usage_error(NULL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "snapvm-ctl: a COMMAND is required\n\n");
        program_help(stderr);
        return CTL_ERR_USAGE;
    }
    int rc = command_run(&ctl, argc - optind, argv + optind);
    fflush(stdout);
    conn_close(ctl.conn);
    json_decref(ctl.schema);
    return rc;
}
