/*
 * snapvm-ctl's shared declarations.  The program is split one file per
 * concern: conn.c (the QMP connection), args.c (key=value arguments typed by
 * the server's schema), table.c (tables, sizes, dates), progress.c (running a
 * snapshot job with its progress), commands.c (the commands and their help),
 * shell.c (the interactive shell) and main.c (global options, dispatch).
 *
 * Exit codes: 0 success, 1 the server (or a job) reported an error, 2 a
 * usage or connection error.
 */
#ifndef SNAPVM_CTL_H
#define SNAPVM_CTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

enum {
    CTL_OK = 0,
    CTL_ERR_QMP = 1,
    CTL_ERR_USAGE = 2,
};

/* ---- conn.c: one QMP connection ---- */

struct conn;

/* Connect to ADDR (unix:PATH, tcp:HOST:PORT, PATH or HOST:PORT), read the
 * greeting and negotiate capabilities; on failure print why and exit 2. */
struct conn *conn_connect(const char *addr);
void conn_close(struct conn *c);
/* Send a command and return its whole reply ({"return"} or {"error"}).
 * `args` is borrowed.  Events read on the way are queued for conn_event(). */
json_t *conn_execute(struct conn *c, const char *name, json_t *args);
/* The same, but NULL when the server closes the connection instead of
 * replying (quit: the server may go before its reply is out). */
json_t *conn_execute_or_eof(struct conn *c, const char *name, json_t *args);
/* The next event: a queued one, or one read within timeout_ms (-1: wait).
 * NULL on timeout or when the server closed the connection (conn_closed). */
json_t *conn_event(struct conn *c, int timeout_ms);
bool conn_closed(const struct conn *c);
json_t *conn_greeting(const struct conn *c);
/* The address as a canonical unix:PATH / tcp:HOST:PORT spec. */
const char *conn_address(const struct conn *c);

/* ---- the program's state ---- */

struct ctl {
    const char *addr; /* --qmp, -s or $SNAPVM_QMP */
    struct conn *conn;
    bool json;      /* --json: machine-readable output */
    bool compact;   /* -c: JSON on one line */
    bool in_shell;  /* commands run inside `snapvm-ctl shell` */
    json_t *schema; /* query-qmp-schema, fetched once */
};

/* Connects on first use. */
struct conn *ctl_conn(struct ctl *ctl);
/* Run a command; on an error reply print it and return NULL (*rc set). */
json_t *ctl_call(struct ctl *ctl, const char *name, json_t *args, int *rc);
/* Print a QMP error reply: "snapvm-ctl: DESC" (or, raw, "Class: DESC"); in
 * --json mode also {"error": ...} on stdout.  Returns CTL_ERR_QMP. */
int ctl_report_error(struct ctl *ctl, const char *cls, const char *desc, bool raw);
/* Print a JSON value on stdout (indented, or compact with -c). */
void ctl_print_json(struct ctl *ctl, json_t *value);
/* Ctrl-C while a command waits (a job, events): ctl_catch_sigint(true) makes
 * SIGINT set a flag and interrupt the wait, ctl_catch_sigint(false) puts
 * back what was there (the shell ignores it at its prompt). */
void ctl_catch_sigint(bool on);
bool ctl_interrupted(void);
int ctl_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Member `key` of `obj` as a string, "" when absent or not a string: the
 * client never trusts a server's reply to have the shape it expects. */
static inline const char *json_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

/* ---- args.c: key=value arguments typed by query-qmp-schema ---- */

json_t *ctl_schema(struct ctl *ctl);
/* Arguments of `cmd` from argv: one JSON object, or key=value words typed by
 * the schema.  NULL with *err (malloc'ed) set on a bad word. */
json_t *args_build(json_t *schema, const char *cmd, int argc, char **argv, char **err);
/* Names of every command in the schema (a new array of strings). */
json_t *schema_command_names(json_t *schema);
/* Argument names of `cmd` (a new array; empty for none or unknown). */
json_t *schema_arg_names(json_t *schema, const char *cmd);
/* The enum values allowed for argument `key` of `cmd` (new array, maybe empty). */
json_t *schema_arg_values(json_t *schema, const char *cmd, const char *key);

/* Whether the elements of what `cmd` returns have member `name` (so that a
 * missing member means "not reported by this server", not "none"). */
bool schema_returns_member(json_t *schema, const char *cmd, const char *name);

/* ---- table.c: output ---- */

struct table;
struct table *table_new(int ncols, const char *const *heads);
/* Add a row of ncols strings (copied); a NULL cell prints as "-". */
void table_add(struct table *t, const char *const *cells);
/* Right-align column `col` (numbers, sizes). */
void table_align_right(struct table *t, int col);
void table_print(struct table *t, FILE *out);
void table_free(struct table *t);

/* 1536 -> "1.5 KiB"; sizes as qemu-img prints them, base 1024. */
void fmt_size(uint64_t bytes, char *buf, size_t len);
/* Seconds since the epoch -> "2026-12-01 08:40:19" (local time). */
void fmt_date(int64_t sec, char *buf, size_t len);
/* Nanoseconds of guest time -> "00:01:02.345" (qemu-img's VM CLOCK). */
void fmt_clock(uint64_t ns, char *buf, size_t len);
/* Seconds -> "1:02:03" / "2:03" / "3s". */
void fmt_duration(double secs, char *buf, size_t len);
/* "a, b, c" from an array of strings ("-" when empty or absent). */
char *fmt_list(json_t *names);

/* ---- progress.c: snapshot jobs with progress ---- */

/* Run job command `type` (snapshot-save/-load/-delete) with `args` (a job-id
 * is added), show its progress (a bar on a terminal, plain lines otherwise,
 * nothing with --json), wait for it to conclude and dismiss it.  `what`
 * names it for people ("saving 's1'").  On success *info (if given) is the
 * job's final query-jobs entry, with "seconds" added.  Returns a CTL_ code. */
int run_job(struct ctl *ctl, const char *type, json_t *args, const char *what, json_t **info);

/* ---- commands.c ---- */

struct command {
    const char *name;
    const char *synopsis; /* arguments after the name */
    const char *summary;  /* one line */
    const char *help;     /* the rest of `COMMAND --help` */
    int (*run)(struct ctl *ctl, int argc, char **argv);
};

extern const struct command ctl_commands[];
const struct command *command_find(const char *name);
/* Run argv[0] with its arguments: a snapvm-ctl command, or else a raw QMP
 * command (as `qmp`).  Returns a CTL_ code. */
int command_run(struct ctl *ctl, int argc, char **argv);
void command_help(const struct command *cmd, FILE *out);
/* One event, as `events` prints it (a line, or JSON with --json). */
void print_event(struct ctl *ctl, json_t *ev);
void program_help(FILE *out);

/* ---- shell.c ---- */

int shell_run(struct ctl *ctl, int argc, char **argv);

#endif
