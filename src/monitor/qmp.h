/*
 * What a QMP (or HMP) command handler sees: the request it serves, the
 * objects it may act on, and the way to answer later (deferred replies).
 *
 * Handlers run on the monitor thread and must never wait for guest or
 * snapshot I/O.  A handler that has slow work to do calls
 * qmp_request_defer(), hands the request to a worker thread (or a job), and
 * returns at once; the worker then calls qmp_request_complete() exactly
 * once.  Meanwhile that client's later commands wait (QMP answers a client's
 * commands in order) while every other client is served.  If the client
 * disconnects first, the completion is simply dropped.  monitor_free()
 * (at quit) waits for every deferred request to be completed, so the
 * caller still gets its answer; complete as the last thing that touches
 * the machine.
 *
 * See commands.c for how to add a command.
 */
#ifndef SNAPVM_MONITOR_QMP_H
#define SNAPVM_MONITOR_QMP_H

#include <jansson.h>
#include <stdbool.h>

#include "util/error.h"

struct machine;
struct monitor;
struct job_manager;
struct qmp_request;

/*
 * A QMP command handler.  `args` (borrowed) has already been validated
 * against the schema: every required argument is present with the right
 * type, and nothing else is there.  Return the reply's "return" value (a new
 * reference; NULL means {}), or NULL with *errp set.  A handler that called
 * qmp_request_defer() returns NULL and sets no error.
 */
typedef json_t *(*qmp_handler)(struct qmp_request *req, json_t *args, struct error **errp);

struct qmp_command {
    const char *name;
    qmp_handler handler;
};

/*
 * An HMP command for human-monitor-command.  `name` may be two words
 * ("info status").  `args` is the rest of the command line, trimmed.
 * Return the text to print (a JSON string, lines ending in "\r\n"; NULL
 * means no output), or NULL with *errp set: the error becomes
 * "Error: <message>\r\n" in the output, as in QEMU.  May defer like a QMP
 * handler; a deferred HMP request is completed with qmp_request_complete()
 * and the same conversion applies (a non-string return prints nothing).
 */
typedef json_t *(*hmp_handler)(struct qmp_request *req, const char *args, struct error **errp);

struct hmp_command {
    const char *name;
    const char *params; /* for "help": e.g. "[tag]" */
    const char *help;
    hmp_handler handler;
};

/*
 * HMP argument parsing, as QEMU's monitor reads string arguments: words
 * separated by blanks, or "double-quoted" with the escapes \" \\ \' \n \r.
 * Parses between `min` and `max` words of `args` into out[] (malloc'd, the
 * rest set to NULL); too few is "CMD: string expected", more is "CMD:
 * extraneous characters at the end of line".  Nothing is ever truncated.
 */
int hmp_parse_words(const char *cmd, const char *args, size_t min, size_t max, char **out,
                    struct error **errp);
void hmp_free_words(char **words, size_t n);
/*
 * A snapshot tag typed at HMP: refused whole, before anything is done, when
 * it is longer than 255 bytes (what qcow2's snapshot table and QEMU hold)
 * or holds a control character.
 */
#define HMP_TAG_MAX 255
int hmp_check_tag(const char *cmd, const char *tag, struct error **errp);

/* The objects a handler acts on. */
struct monitor *qmp_request_monitor(struct qmp_request *req);
struct machine *qmp_request_machine(struct qmp_request *req); /* NULL in unit tests */
struct job_manager *qmp_request_jobs(struct qmp_request *req);
const char *qmp_request_command(struct qmp_request *req);

/*
 * Run fn(opaque) on the monitor thread right after this (not deferred)
 * request's reply has been queued for its client: for commands whose effect
 * QEMU lets happen after it answers (quit: the reply, then SHUTDOWN).
 */
void qmp_request_after_reply(struct qmp_request *req, void (*fn)(void *opaque), void *opaque);

/*
 * Take the reply out of the handler's hands.  Call on the monitor thread,
 * inside the handler, before handing `req` to another thread.
 */
void qmp_request_defer(struct qmp_request *req);
/*
 * Answer a deferred request, from any thread, exactly once: `ret` (stolen;
 * NULL means {}) on success, or `err` (stolen) on failure.  `req` is freed:
 * do not touch it afterwards.
 */
void qmp_request_complete(struct qmp_request *req, json_t *ret, struct error *err);

/*
 * The common case of the above: defer `req` and run fn() on a new thread;
 * what fn returns (or its error) completes the request.  Call inside the
 * handler, then return NULL.  fn must not touch `req` after returning.
 */
typedef json_t *(*qmp_thread_fn)(struct qmp_request *req, void *opaque, struct error **errp);
void qmp_request_run_in_thread(struct qmp_request *req, qmp_thread_fn fn, void *opaque);

#endif
