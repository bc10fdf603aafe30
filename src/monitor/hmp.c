/*
 * The human monitor subset behind QMP's human-monitor-command: a table of
 * HMP commands (this file's, plus those other areas register in
 * commands.c), the matching of a command line against them, and "help".
 * Output is text with CRLF line ends; errors print as "Error: ..." (the
 * dispatcher converts them, also for deferred replies).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "machine/machine.h"
#include "monitor/commands.h"
#include "monitor/monitor-int.h"
#include "monitor/qapi-commands.h"
#include "util/buf.h"

static const char *skip_space(const char *p)
{
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    return p;
}

/*
 * Does `line` start with the words of `name` ("info status" also matches
 * "info   status")?  Returns the length of the match in `line`, or 0.
 */
static size_t match_name(const char *line, const char *name)
{
    const char *p = line;
    for (const char *n = name; *n; n++) {
        if (*n == ' ') {
            if (*p != ' ' && *p != '\t') {
                return 0;
            }
            p = skip_space(p);
        } else if (*p++ != *n) {
            return 0;
        }
    }
    return *p && *p != ' ' && *p != '\t' ? 0 : (size_t)(p - line);
}

/* The longest name wins, so "info snapshots" beats a plain "info". */
static const struct hmp_command *hmp_lookup(const struct hmp_command *const *tables,
                                            const char *line, size_t *name_len)
{
    const struct hmp_command *best = NULL;
    *name_len = 0;
    for (size_t t = 0; tables[t]; t++) {
        for (const struct hmp_command *c = tables[t]; c->name; c++) {
            size_t n = match_name(line, c->name);
            if (n > *name_len) {
                best = c;
                *name_len = n;
            }
        }
    }
    return best;
}

static char *trimmed(const char *s)
{
    s = skip_space(s);
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) {
        n--;
    }
    return strndup(s, n);
}

/* ---- argument parsing (qmp.h) ---- */

/* One word at *pp: NULL at the end of the line, or on a bad quoted string. */
static char *next_word(const char *cmd, const char **pp, bool *bad, struct error **errp)
{
    const char *p = skip_space(*pp);
    struct byte_buf w;
    *bad = false;
    if (!*p) {
        *pp = p;
        return NULL;
    }
    buf_init(&w);
    if (*p == '"') {
        for (p++; *p != '"'; p++) {
            char c = *p;
            if (!c) {
                error_setg(errp, "%s: unterminated string\r\nTry \"help %s\" for more information",
                           cmd, cmd);
                goto fail;
            }
            if (c == '\\') {
                switch (*++p) {
                case '\\':
                case '\'':
                case '"':
                    c = *p;
                    break;
                case 'n':
                    c = '\n';
                    break;
                case 'r':
                    c = '\r';
                    break;
                default:
                    error_setg(errp,
                               "%s: unsupported escape code: '\\%c'\r\nTry \"help %s\" for more "
                               "information",
                               cmd, *p ? *p : ' ', cmd);
                    goto fail;
                }
            }
            buf_append(&w, &c, 1);
        }
        p++;
        if (*p && *p != ' ' && *p != '\t') {
            error_setg(errp, "%s: extraneous characters after a quoted string", cmd);
            goto fail;
        }
    } else {
        size_t n = strcspn(p, " \t");
        buf_append(&w, p, n);
        p += n;
    }
    buf_append(&w, "", 1);
    *pp = p;
    return (char *)w.data;
fail:
    buf_free(&w);
    *bad = true;
    return NULL;
}

void hmp_free_words(char **words, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(words[i]);
        words[i] = NULL;
    }
}

int hmp_parse_words(const char *cmd, const char *args, size_t min, size_t max, char **out,
                    struct error **errp)
{
    const char *p = args ? args : "";
    size_t n = 0;
    memset(out, 0, max * sizeof(*out));
    while (n < max) {
        bool bad;
        char *w = next_word(cmd, &p, &bad, errp);
        if (bad) {
            hmp_free_words(out, n);
            return -1;
        }
        if (!w) {
            break;
        }
        out[n++] = w;
    }
    if (n < min) {
        error_setg(errp, "%s: string expected\r\nTry \"help %s\" for more information", cmd, cmd);
    } else if (*skip_space(p)) {
        error_setg(errp,
                   "%s: extraneous characters at the end of line\r\nTry \"help %s\" for more "
                   "information",
                   cmd, cmd);
    } else {
        return (int)n;
    }
    hmp_free_words(out, n);
    return -1;
}

int hmp_check_tag(const char *cmd, const char *tag, struct error **errp)
{
    size_t len = strlen(tag);
    if (len > HMP_TAG_MAX) {
        error_setg(errp, "%s: the tag is %zu bytes long; a snapshot tag holds at most %d", cmd, len,
                   HMP_TAG_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tag[i];
        if (c < 0x20 || c == 0x7f) {
            error_setg(errp, "%s: the tag holds the control character 0x%02x at offset %zu", cmd, c,
                       i);
            return -1;
        }
    }
    return 0;
}

static json_t *unknown_command(const char *line)
{
    /* Name the first word, or the first two for "info ...". */
    size_t n = strcspn(line, " \t");
    if (!strncmp(line, "info", n) && n == 4 && line[n]) {
        const char *sub = skip_space(line + n);
        n = (size_t)(sub - line) + strcspn(sub, " \t");
    }
    char *text = NULL;
    if (asprintf(&text, "unknown command: '%.*s'\r\n", (int)n, line) < 0) {
        abort();
    }
    json_t *s = json_string(text);
    free(text);
    return s;
}

json_t *qmp_human_monitor_command(struct qmp_request *req,
                                  const struct qapi_args_human_monitor_command *args,
                                  struct error **errp)
{
    /*
     * As QEMU: a cpu-index that names no vCPU is a QMP error, before any
     * command runs.  HMP commands here need no implicit CPU otherwise.
     */
    if (args->has_cpu_index) {
        struct machine *m = qmp_request_machine(req);
        if (args->cpu_index < 0 || !m || args->cpu_index >= machine_vcpu_count(m)) {
            error_setg(errp, "Parameter 'cpu-index' expects a CPU number");
            return NULL;
        }
    }
    req->hmp = true; /* from here on, errors are output text */
    char *line = trimmed(args->command_line);
    json_t *ret = NULL;
    size_t n;
    const struct hmp_command *cmd =
            *line ? hmp_lookup(monitor_hmp_tables(qmp_request_monitor(req)), line, &n) : NULL;
    if (cmd) {
        char *rest = trimmed(line + n);
        ret = cmd->handler(req, rest, errp);
        free(rest);
    } else if (*line) {
        ret = unknown_command(line);
    }
    free(line);
    return ret;
}

/* QEMU's help line: "NAME PARAMS -- HELP" (two blanks when there are no params). */
static void help_line(struct byte_buf *out, const struct hmp_command *c)
{
    char *text = NULL;
    if (asprintf(&text, "%s %s -- %s\r\n", c->name, c->params ? c->params : "", c->help) < 0) {
        abort();
    }
    buf_append(out, text, strlen(text));
    free(text);
}

static json_t *hmp_help(struct qmp_request *req, const char *args, struct error **errp)
{
    (void)errp;
    struct byte_buf out;
    buf_init(&out);
    const struct hmp_command *const *tables = monitor_hmp_tables(qmp_request_monitor(req));
    for (size_t t = 0; tables[t]; t++) {
        for (const struct hmp_command *c = tables[t]; c->name; c++) {
            if (!*args || match_name(c->name, args)) {
                help_line(&out, c);
            }
        }
    }
    json_t *s = json_stringn((const char *)out.data, out.len);
    buf_free(&out);
    return s;
}

/* "info" alone lists its subcommands, as QEMU's; "info X" for an unknown X is unknown. */
static json_t *hmp_info(struct qmp_request *req, const char *args, struct error **errp)
{
    if (*args) {
        char *line = NULL;
        if (asprintf(&line, "info %s", args) < 0) {
            abort();
        }
        json_t *ret = unknown_command(line);
        free(line);
        return ret;
    }
    (void)errp;
    /* Sorted by name, as QEMU lists them. */
    const struct hmp_command *subs[64];
    size_t n = 0;
    const struct hmp_command *const *tables = monitor_hmp_tables(qmp_request_monitor(req));
    for (size_t t = 0; tables[t]; t++) {
        for (const struct hmp_command *c = tables[t]; c->name; c++) {
            if (!strncmp(c->name, "info ", 5) && n < sizeof(subs) / sizeof(subs[0])) {
                size_t i = n++;
                for (; i > 0 && strcmp(subs[i - 1]->name, c->name) > 0; i--) {
                    subs[i] = subs[i - 1];
                }
                subs[i] = c;
            }
        }
    }
    struct byte_buf out;
    buf_init(&out);
    for (size_t i = 0; i < n; i++) {
        help_line(&out, subs[i]);
    }
    json_t *ret = json_stringn((const char *)out.data, out.len);
    buf_free(&out);
    return ret;
}

/* As QEMU: MAJOR.MINOR.MICRO immediately followed by the package string. */
static json_t *hmp_info_version(struct qmp_request *req, const char *args, struct error **errp)
{
    (void)req, (void)args, (void)errp;
    json_t *v = monitor_version_info();
    json_t *q = json_object_get(v, "qemu");
    char *text = NULL;
    if (asprintf(&text, "%lld.%lld.%lld%s\r\n",
                 (long long)json_integer_value(json_object_get(q, "major")),
                 (long long)json_integer_value(json_object_get(q, "minor")),
                 (long long)json_integer_value(json_object_get(q, "micro")),
                 json_string_value(json_object_get(v, "package"))) < 0) {
        abort();
    }
    json_decref(v);
    json_t *s = json_string(text);
    free(text);
    return s;
}

/* As QEMU: the -name, or nothing without one. */
static json_t *hmp_info_name(struct qmp_request *req, const char *args, struct error **errp)
{
    (void)args, (void)errp;
    const char *name = monitor_vm_name(qmp_request_monitor(req));
    if (!name) {
        return json_string("");
    }
    char *text = NULL;
    if (asprintf(&text, "%s\r\n", name) < 0) {
        abort();
    }
    json_t *s = json_string(text);
    free(text);
    return s;
}

const struct hmp_command hmp_core_commands[] = {
        {"help", "[cmd]", "show the help", hmp_help},
        {"info", "[subcommand]", "show various information about the system state", hmp_info},
        {"info version", "", "show the version of QEMU", hmp_info_version},
        {"info name", "", "show the current VM name", hmp_info_name},
        {NULL, NULL, NULL, NULL},
};
