/*
 * The commands of snapvm-ctl, their options and their help.  Each command is
 * one function over the QMP connection; its entry in ctl_commands[] is the
 * one place its synopsis and help live (`--help`, `help`, the shell and the
 * man page test all read it).  A word that is not a snapvm-ctl command is
 * sent as a raw QMP command, as `qmp` does, so scripts written for the old
 * `snapvm-ctl -s SOCKET query-status` keep working.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

/* ---- option parsing shared by the commands ---- */

enum { OPT_HELP = 'h', OPT_VMSTATE = 'v', OPT_EXCLUDE = 'x', OPT_TREE = 't', OPT_COUNT = 'n' };

static const struct option snapshot_opts[] = {
        {"vmstate", required_argument, NULL, OPT_VMSTATE},
        {"exclude", required_argument, NULL, OPT_EXCLUDE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
};

static const struct option help_only_opts[] = {
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
};

/* getopt_long over a command's own argv (argv[0] is its name).  Returns the
 * option, -1 at the end, or '?' after printing the error. */
static int next_opt(int argc, char **argv, const char *shortopts, const struct option *longopts)
{
    opterr = 0;
    int opt = getopt_long(argc, argv, shortopts, longopts, NULL);
    if (opt == '?') {
        if (optopt) {
            ctl_usage_error(argv[0], "unknown option '-%c'", optopt);
        } else {
            ctl_usage_error(argv[0], "unknown option '%s'", argv[optind - 1]);
        }
    } else if (opt == ':') {
        ctl_usage_error(argv[0], "option '%s' needs an argument", argv[optind - 1]);
        opt = '?';
    }
    return opt;
}

static void reset_getopt(void)
{
    optind = 0; /* glibc: start over, for the next command (the shell) */
}

static int show_help(const char *name)
{
    command_help(command_find(name), stdout);
    return CTL_OK;
}

/* Commands without options: --help, else no extra words unless allowed. */
static int simple_opts(int argc, char **argv, int max_args, bool *helped)
{
    reset_getopt();
    int opt;
    *helped = false;
    while ((opt = next_opt(argc, argv, "+:h", help_only_opts)) != -1) {
        if (opt == OPT_HELP) {
            *helped = true;
            return show_help(argv[0]);
        }
        return CTL_ERR_USAGE;
    }
    if (argc - optind > max_args) {
        return ctl_usage_error(argv[0], "unexpected argument '%s'", argv[optind + max_args]);
    }
    return CTL_OK;
}

#define SIMPLE_OPTS(max)                                                                           \
    do {                                                                                           \
        bool helped_;                                                                              \
        int rc_ = simple_opts(argc, argv, (max), &helped_);                                        \
        if (rc_ != CTL_OK || helped_) {                                                            \
            return rc_;                                                                            \
        }                                                                                          \
    } while (0)

/* ---- machine ---- */

static int cmd_status(struct ctl *ctl, int argc, char **argv)
{
    SIMPLE_OPTS(0);
    int rc;
    json_t *st = ctl_call(ctl, "query-status", NULL, &rc);
    if (!st) {
        return rc;
    }
    if (ctl->json) {
        ctl_print_json(ctl, st);
    } else {
        const char *status = json_str(st, "status");
        bool running = json_is_true(json_object_get(st, "running"));
        if (running || !strcmp(status, "paused")) {
            printf("VM status: %s\n", status);
        } else {
            printf("VM status: paused (%s)\n", status);
        }
    }
    json_decref(st);
    return CTL_OK;
}

/* stop, cont, quit: the QMP command of the same name; silent on success. */
static int run_plain(struct ctl *ctl, int argc, char **argv)
{
    SIMPLE_OPTS(0);
    int rc;
    json_t *r;
    if (!strcmp(argv[0], "quit")) {
        /* snapvm may close the socket before its reply is out: that is a
         * quit too (the SHUTDOWN event, if any, has been read) */
        json_t *reply = conn_execute_or_eof(ctl_conn(ctl), "quit", NULL);
        json_t *err = json_object_get(reply, "error");
        if (err) {
            rc = ctl_report_error(ctl, json_string_value(json_object_get(err, "class")),
                                  json_string_value(json_object_get(err, "desc")), false);
            json_decref(reply);
            return rc;
        }
        json_decref(reply);
        r = json_object();
    } else if (!(r = ctl_call(ctl, argv[0], NULL, &rc))) {
        return rc;
    }
    if (ctl->json) {
        ctl_print_json(ctl, r);
    }
    json_decref(r);
    return CTL_OK;
}

/* ---- snapshots ---- */

static json_t *find_snapshot(json_t *list, const char *tag)
{
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        if (!strcmp(json_str(s, "tag"), tag)) {
            return s;
        }
    }
    return NULL;
}

/* TAG [--vmstate NODE] [--exclude NODE[,NODE...]]... into job arguments. */
static int snapshot_args(int argc, char **argv, bool allow_vmstate, json_t **out, bool *helped)
{
    reset_getopt();
    *helped = false;
    *out = NULL;
    json_t *args = json_object();
    json_t *exclude = json_array();
    int opt;
    /* options may follow the tag: getopt permutes (no '+') */
    while ((opt = next_opt(argc, argv, ":h", snapshot_opts)) != -1) {
        switch (opt) {
        case OPT_HELP:
            json_decref(args);
            json_decref(exclude);
            *helped = true;
            return show_help(argv[0]);
        case OPT_VMSTATE:
            if (!allow_vmstate) {
                goto bad;
            }
            json_object_set_new(args, "vmstate", json_string(optarg));
            break;
        case OPT_EXCLUDE: {
            char *copy = strdup(optarg), *save = NULL;
            for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                json_array_append_new(exclude, json_string(t));
            }
            free(copy);
            break;
        }
        default:
            goto bad;
        }
    }
    if (argc - optind != 1) {
        json_decref(args);
        json_decref(exclude);
        if (argc == optind) {
            return ctl_usage_error(argv[0], "a snapshot TAG is required");
        }
        return ctl_usage_error(argv[0], "unexpected argument '%s'", argv[optind + 1]);
    }
    json_object_set_new(args, "tag", json_string(argv[optind]));
    if (json_array_size(exclude)) {
        json_object_set(args, "exclude", exclude);
    }
    json_decref(exclude);
    *out = args;
    return CTL_OK;
bad:
    if (opt == OPT_VMSTATE) {
        ctl_usage_error(argv[0], "--vmstate does not apply");
    }
    json_decref(args);
    json_decref(exclude);
    return CTL_ERR_USAGE;
}

static json_t *query_snapshots(struct ctl *ctl, int *rc)
{
    return ctl_call(ctl, "query-snapshots", NULL, rc);
}

/* The human summary line of a finished create/revert. */
static void print_done(const char *verb, const char *tag, json_t *info, json_t *snap)
{
    char secs[32];
    snprintf(secs, sizeof(secs), "%.2fs", json_real_value(json_object_get(info, "seconds")));
    printf("%s '%s' in %s", verb, tag, secs);
    if (snap) {
        char size[32];
        fmt_size((uint64_t)json_integer_value(json_object_get(snap, "vm-state-size")), size,
                 sizeof(size));
        char *nodes = fmt_list(json_object_get(snap, "nodes"));
        const char *vmstate = json_string_value(json_object_get(snap, "vmstate"));
        printf(": VM state %s", size);
        if (vmstate) {
            printf(" on %s", vmstate);
        }
        printf(", nodes %s", nodes);
        free(nodes);
    }
    printf("\n");
}

static int snapshot_job(struct ctl *ctl, int argc, char **argv, const char *type,
                        const char *gerund, const char *done, bool allow_vmstate)
{
    json_t *args;
    bool helped;
    int rc = snapshot_args(argc, argv, allow_vmstate, &args, &helped);
    if (rc != CTL_OK || helped) {
        return rc;
    }
    char *tag = strdup(json_string_value(json_object_get(args, "tag")));
    char what[300];
    snprintf(what, sizeof(what), "%s '%s'", gerund, tag);
    json_t *info = NULL;
    rc = run_job(ctl, type, args, what, &info);
    json_decref(args);
    if (rc == CTL_OK) {
        json_t *list = strcmp(type, "snapshot-delete") ? query_snapshots(ctl, &rc) : NULL;
        json_t *snap = find_snapshot(list, tag);
        if (ctl->json) {
            json_t *out = json_pack("{s:s, s:O}", "tag", tag, "job", info);
            if (snap) {
                json_object_set(out, "snapshot", snap);
            }
            ctl_print_json(ctl, out);
            json_decref(out);
        } else {
            print_done(done, tag, info, snap);
        }
        json_decref(list);
        rc = CTL_OK;
    }
    json_decref(info);
    free(tag);
    return rc;
}

static int cmd_snapshot_create(struct ctl *ctl, int argc, char **argv)
{
    return snapshot_job(ctl, argc, argv, "snapshot-save", "saving", "Created snapshot", true);
}

static int cmd_snapshot_revert(struct ctl *ctl, int argc, char **argv)
{
    return snapshot_job(ctl, argc, argv, "snapshot-load", "reverting to", "Reverted to snapshot",
                        true);
}

static int cmd_snapshot_delete(struct ctl *ctl, int argc, char **argv)
{
    return snapshot_job(ctl, argc, argv, "snapshot-delete", "deleting", "Deleted snapshot", false);
}

/* What this server reports in query-snapshots (older ones lack the
 * description record and the byte counts: say so, never show a guess). */
struct reported {
    bool parent, current, stored, exclusive;
};

static struct reported reported(struct ctl *ctl)
{
    json_t *schema = ctl_schema(ctl);
    struct reported r = {
            .parent = schema_returns_member(schema, "query-snapshots", "parent"),
            .current = schema_returns_member(schema, "query-snapshots", "current"),
            .stored = schema_returns_member(schema, "query-snapshots", "stored-bytes"),
            .exclusive = schema_returns_member(schema, "query-snapshots", "exclusive-bytes"),
    };
    return r;
}

static void note_unreported(const char *what)
{
    fprintf(stderr, "snapvm-ctl: note: this snapvm does not report %s\n", what);
}

static const char *size_cell(json_t *v, char *buf, size_t len)
{
    if (!json_is_integer(v)) {
        return NULL;
    }
    fmt_size((uint64_t)json_integer_value(v), buf, len);
    return buf;
}

static void list_table(json_t *list, struct reported rep)
{
    static const char *const heads[] = {"TAG",      "ID",    "DATE",     "VM SIZE", "STORED",
                                        "VM CLOCK", "NODES", "LOADABLE", "CURRENT"};
    struct table *t = table_new(9, heads);
    table_align_right(t, 3);
    table_align_right(t, 4);
    table_align_right(t, 5);
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        char date[32], size[32], stored[32], clock[32];
        fmt_date(json_integer_value(json_object_get(s, "date-sec")), date, sizeof(date));
        fmt_size((uint64_t)json_integer_value(json_object_get(s, "vm-state-size")), size,
                 sizeof(size));
        fmt_clock((uint64_t)json_integer_value(json_object_get(s, "vm-clock-nsec")), clock,
                  sizeof(clock));
        char *nodes = fmt_list(json_object_get(s, "nodes"));
        json_t *cur = json_object_get(s, "current");
        const char *cells[] = {
                json_string_value(json_object_get(s, "tag")),
                json_string_value(json_object_get(s, "id")),
                date,
                size,
                size_cell(json_object_get(s, "stored-bytes"), stored, sizeof(stored)),
                clock,
                nodes,
                json_is_true(json_object_get(s, "loadable")) ? "yes" : "no",
                !rep.current        ? NULL
                : json_is_true(cur) ? "*"
                                    : "",
        };
        table_add(t, cells);
        free(nodes);
    }
    table_print(t, stdout);
    table_free(t);
    if (!rep.stored) {
        note_unreported("the bytes each snapshot stores (STORED '-')");
    }
    if (!rep.current) {
        note_unreported("which snapshot is current (CURRENT '-')");
    }
}

static void tree_print(json_t *list, json_t *s, const char *prefix, bool last, bool root)
{
    char date[32], size[32];
    fmt_date(json_integer_value(json_object_get(s, "date-sec")), date, sizeof(date));
    fmt_size((uint64_t)json_integer_value(json_object_get(s, "vm-state-size")), size, sizeof(size));
    const char *tag = json_string_value(json_object_get(s, "tag"));
    printf("%s%s%s  %s  %s%s%s\n", prefix,
           root   ? ""
           : last ? "└── "
                  : "├── ",
           tag, date, size, json_is_true(json_object_get(s, "loadable")) ? "" : "  (not loadable)",
           json_is_true(json_object_get(s, "current")) ? "  <- current" : "");
    char *sub = NULL;
    if (asprintf(&sub, "%s%s", prefix, root ? "" : last ? "    " : "│   ") < 0) {
        abort();
    }
    json_t *kids = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *p = json_string_value(json_object_get(c, "parent"));
        if (p && !strcmp(p, tag) && c != s) {
            json_array_append(kids, c);
        }
    }
    json_array_foreach(kids, i, c)
    {
        tree_print(list, c, sub, i + 1 == json_array_size(kids), false);
    }
    json_decref(kids);
    free(sub);
}

static void list_tree(json_t *list, struct reported rep)
{
    if (!rep.parent) {
        note_unreported("snapshot parents: every snapshot is shown as a root");
    }
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *p = json_string_value(json_object_get(s, "parent"));
        if (!p || !find_snapshot(list, p)) { /* a root, or its parent was deleted */
            tree_print(list, s, "", true, true);
        }
    }
    if (!rep.current) {
        note_unreported("which snapshot is current");
    }
}

static int cmd_snapshot_list(struct ctl *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
            {"tree", no_argument, NULL, OPT_TREE},
            {"help", no_argument, NULL, OPT_HELP},
            {NULL, 0, NULL, 0},
    };
    reset_getopt();
    bool tree = false;
    int opt;
    while ((opt = next_opt(argc, argv, "+:h", opts)) != -1) {
        if (opt == OPT_HELP) {
            return show_help(argv[0]);
        }
        if (opt != OPT_TREE) {
            return CTL_ERR_USAGE;
        }
        tree = true;
    }
    if (optind < argc) {
        return ctl_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
    }
    int rc;
    json_t *list = query_snapshots(ctl, &rc);
    if (!list) {
        return rc;
    }
    if (ctl->json) {
        ctl_print_json(ctl, list);
    } else if (json_array_size(list) == 0) {
        printf("There are no snapshots.\n");
    } else if (tree) {
        list_tree(list, reported(ctl));
    } else {
        list_table(list, reported(ctl));
    }
    json_decref(list);
    return CTL_OK;
}

static json_t *children_of(json_t *list, const char *tag)
{
    json_t *kids = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *p = json_string_value(json_object_get(c, "parent"));
        if (p && !strcmp(p, tag)) {
            json_array_append(kids, json_object_get(c, "tag"));
        }
    }
    return kids;
}

/* Each node's own record of the snapshot (query-named-block-nodes). */
static json_t *node_records(struct ctl *ctl, const char *tag)
{
    int rc;
    json_t *nodes = ctl_call(ctl, "query-named-block-nodes", NULL, &rc);
    json_t *out = json_array();
    size_t i, j;
    json_t *n, *s;
    json_array_foreach(nodes, i, n)
    {
        json_array_foreach(json_object_get(json_object_get(n, "image"), "snapshots"), j, s)
        {
            if (!strcmp(json_str(s, "name"), tag)) {
                json_array_append_new(out, json_pack("{s:O, s:O, s:O}", "node",
                                                     json_object_get(n, "node-name"), "id",
                                                     json_object_get(s, "id"), "vm-state-size",
                                                     json_object_get(s, "vm-state-size")));
            }
        }
    }
    json_decref(nodes);
    return out;
}

static void info_line(const char *key, const char *value)
{
    printf("%-16s %s\n", key, value ? value : "-");
}

static int cmd_snapshot_info(struct ctl *ctl, int argc, char **argv)
{
    SIMPLE_OPTS(1);
    if (optind >= argc) {
        return ctl_usage_error(argv[0], "a snapshot TAG is required");
    }
    const char *tag = argv[optind];
    int rc;
    json_t *list = query_snapshots(ctl, &rc);
    if (!list) {
        return rc;
    }
    json_t *s = find_snapshot(list, tag);
    if (!s) {
        char msg[400];
        snprintf(msg, sizeof(msg), "No snapshot '%s' (snapshot-list shows the tags)", tag);
        json_decref(list);
        return ctl_report_error(ctl, "GenericError", msg, false);
    }
    struct reported rep = reported(ctl);
    json_t *kids = children_of(list, tag);
    json_t *recs = node_records(ctl, tag);
    if (ctl->json) {
        json_t *out = json_deep_copy(s);
        if (rep.parent) {
            json_object_set(out, "children", kids);
        }
        json_object_set(out, "node-records", recs);
        ctl_print_json(ctl, out);
        json_decref(out);
    } else {
        char buf[64], buf2[96];
        info_line("tag:", tag);
        info_line("id:", json_string_value(json_object_get(s, "id")));
        fmt_date(json_integer_value(json_object_get(s, "date-sec")), buf, sizeof(buf));
        info_line("date:", buf);
        fmt_clock((uint64_t)json_integer_value(json_object_get(s, "vm-clock-nsec")), buf,
                  sizeof(buf));
        info_line("vm clock:", buf);
        json_int_t vms = json_integer_value(json_object_get(s, "vm-state-size"));
        fmt_size((uint64_t)vms, buf, sizeof(buf));
        snprintf(buf2, sizeof(buf2), "%s (%lld bytes)", buf, (long long)vms);
        info_line("vm size:", buf2);
        info_line("vmstate node:", json_string_value(json_object_get(s, "vmstate")));
        char *l = fmt_list(json_object_get(s, "nodes"));
        info_line("nodes:", l);
        free(l);
        l = fmt_list(json_object_get(s, "excluded"));
        info_line("excluded:", json_object_get(s, "excluded") ? l : "(not reported)");
        free(l);
        if (rep.parent) {
            const char *p = json_string_value(json_object_get(s, "parent"));
            info_line("parent:", p ? p : "(none: a root)");
            l = fmt_list(kids);
            info_line("children:", json_array_size(kids) ? l : "(none)");
            free(l);
        } else {
            info_line("parent:", "(not reported)");
        }
        info_line("current:", !rep.current                                  ? "(not reported)"
                              : json_is_true(json_object_get(s, "current")) ? "yes"
                                                                            : "no");
        info_line("bytes stored:",
                  rep.stored ? size_cell(json_object_get(s, "stored-bytes"), buf, sizeof(buf))
                             : "(not reported)");
        info_line("bytes exclusive:",
                  rep.exclusive ? size_cell(json_object_get(s, "exclusive-bytes"), buf, sizeof(buf))
                                : "(not reported)");
        if (json_is_true(json_object_get(s, "loadable"))) {
            info_line("loadable:", "yes");
        } else {
            const char *why = json_string_value(json_object_get(s, "reason"));
            snprintf(buf2, sizeof(buf2), "no%s%.80s", why ? ": " : "", why ? why : "");
            info_line("loadable:", buf2);
        }
        json_t *machine = json_object_get(s, "machine");
        if (machine) {
            char ram[32];
            fmt_size((uint64_t)json_integer_value(json_object_get(machine, "ram-size")), ram,
                     sizeof(ram));
            long long vcpus = (long long)json_integer_value(json_object_get(machine, "vcpus"));
            snprintf(buf2, sizeof(buf2), "%s RAM, %lld vCPU%s", ram, vcpus, vcpus == 1 ? "" : "s");
            info_line("machine:", buf2);
            size_t k;
            json_t *d;
            json_array_foreach(json_object_get(machine, "devices"), k, d)
            {
                const char *drive = json_string_value(json_object_get(d, "drive"));
                char line[300];
                snprintf(line, sizeof(line), "%s (%s%s%s)",
                         json_string_value(json_object_get(d, "id")),
                         json_string_value(json_object_get(d, "type")), drive ? " on " : "",
                         drive ? drive : "");
                info_line(k == 0 ? "devices:" : "", line);
            }
        }
        size_t i;
        json_t *r;
        json_array_foreach(recs, i, r)
        {
            fmt_size((uint64_t)json_integer_value(json_object_get(r, "vm-state-size")), buf,
                     sizeof(buf));
            snprintf(buf2, sizeof(buf2), "id %s, VM state %s",
                     json_string_value(json_object_get(r, "id")), buf);
            char key[80];
            snprintf(key, sizeof(key), "on %s:", json_string_value(json_object_get(r, "node")));
            info_line(key, buf2);
        }
    }
    json_decref(recs);
    json_decref(kids);
    json_decref(list);
    return CTL_OK;
}

/* ---- block nodes ---- */

static int cmd_nodes(struct ctl *ctl, int argc, char **argv)
{
    SIMPLE_OPTS(0);
    int rc;
    json_t *nodes = ctl_call(ctl, "query-named-block-nodes", NULL, &rc);
    if (!nodes) {
        return rc;
    }
    if (ctl->json) {
        ctl_print_json(ctl, nodes);
        json_decref(nodes);
        return CTL_OK;
    }
    static const char *const heads[] = {"NODE",      "DRIVER",   "SIZE", "ACCESS",
                                        "SNAPSHOTS", "VM STATE", "FILE"};
    struct table *t = table_new(7, heads);
    table_align_right(t, 2);
    table_align_right(t, 4);
    table_align_right(t, 5);
    size_t i, j;
    json_t *n, *s;
    json_array_foreach(nodes, i, n)
    {
        json_t *image = json_object_get(n, "image");
        json_t *snaps = json_object_get(image, "snapshots");
        uint64_t vmstate = 0;
        json_array_foreach(snaps, j, s)
        {
            vmstate += (uint64_t)json_integer_value(json_object_get(s, "vm-state-size"));
        }
        char size[32], vms[32], count[16];
        fmt_size((uint64_t)json_integer_value(json_object_get(image, "virtual-size")), size,
                 sizeof(size));
        fmt_size(vmstate, vms, sizeof(vms));
        snprintf(count, sizeof(count), "%zu", json_array_size(snaps));
        bool can = !strcmp(json_str(n, "drv"), "qcow2");
        const char *cells[] = {
                json_string_value(json_object_get(n, "node-name")),
                json_string_value(json_object_get(n, "drv")),
                size,
                json_is_true(json_object_get(n, "ro")) ? "ro" : "rw",
                can ? count : NULL,
                can ? vms : NULL,
                json_string_value(json_object_get(n, "file")),
        };
        table_add(t, cells);
    }
    table_print(t, stdout);
    table_free(t);
    json_decref(nodes);
    return CTL_OK;
}

/* ---- events ---- */

void print_event(struct ctl *ctl, json_t *ev)
{
    if (ctl->json) {
        char *text = json_dumps(ev, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", text);
        free(text);
    } else {
        json_t *ts = json_object_get(ev, "timestamp");
        char date[32];
        fmt_date(json_integer_value(json_object_get(ts, "seconds")), date, sizeof(date));
        printf("%s.%06lld %s", date,
               (long long)json_integer_value(json_object_get(ts, "microseconds")),
               json_string_value(json_object_get(ev, "event")));
        json_t *data = json_object_get(ev, "data");
        if (data && json_object_size(data)) {
            char *text = json_dumps(data, JSON_COMPACT | JSON_ENSURE_ASCII);
            printf(" %s", text);
            free(text);
        }
        printf("\n");
    }
    fflush(stdout);
}

static int cmd_events(struct ctl *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
            {"count", required_argument, NULL, OPT_COUNT},
            {"help", no_argument, NULL, OPT_HELP},
            {NULL, 0, NULL, 0},
    };
    reset_getopt();
    long count = -1;
    int opt;
    while ((opt = next_opt(argc, argv, "+:hn:", opts)) != -1) {
        if (opt == OPT_HELP) {
            return show_help(argv[0]);
        }
        if (opt != OPT_COUNT) {
            return CTL_ERR_USAGE;
        }
        char *end;
        count = strtol(optarg, &end, 10);
        if (*end || count <= 0) {
            return ctl_usage_error(argv[0], "--count wants a positive number, not '%s'", optarg);
        }
    }
    struct conn *c = ctl_conn(ctl);
    long seen = 0;
    ctl_catch_sigint(true); /* Ctrl-C ends the command (and not the shell) */
    while ((count < 0 || seen < count) && !ctl_interrupted()) {
        json_t *ev = conn_event(c, 500);
        if (!ev) {
            if (conn_closed(c)) {
                fprintf(stderr, "snapvm-ctl: %s closed the connection\n", conn_address(c));
                break;
            }
            continue; /* a timeout or a signal: look at the flag */
        }
        const char *name = json_string_value(json_object_get(ev, "event"));
        bool wanted = optind >= argc;
        for (int i = optind; i < argc && !wanted; i++) {
            wanted = !strcasecmp(argv[i], name);
        }
        if (wanted) {
            print_event(ctl, ev);
            seen++;
        }
        json_decref(ev);
    }
    ctl_catch_sigint(false);
    return CTL_OK;
}

/* ---- raw QMP ---- */

static int raw_qmp(struct ctl *ctl, const char *name, int argc, char **argv)
{
    json_t *args = NULL;
    if (argc > 0) {
        char *err = NULL;
        /* the schema is fetched only when there are key=value words to type */
        json_t *schema = argc == 1 && argv[0][0] == '{' ? NULL : ctl_schema(ctl);
        args = args_build(schema, name, argc, argv, &err);
        if (!args) {
            ctl_usage_error(name, "%s", err);
            free(err);
            return CTL_ERR_USAGE;
        }
    }
    json_t *reply = conn_execute(ctl_conn(ctl), name, args);
    json_decref(args);
    json_t *err = json_object_get(reply, "error");
    int rc = CTL_OK;
    if (err) {
        rc = ctl_report_error(ctl, json_string_value(json_object_get(err, "class")),
                              json_string_value(json_object_get(err, "desc")), true);
    } else {
        ctl_print_json(ctl, json_object_get(reply, "return"));
    }
    json_decref(reply);
    return rc;
}

static int cmd_qmp(struct ctl *ctl, int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        return show_help(argv[0]);
    }
    if (argc < 2) {
        return ctl_usage_error(argv[0], "a QMP COMMAND is required");
    }
    return raw_qmp(ctl, argv[1], argc - 2, argv + 2);
}

static int cmd_hmp(struct ctl *ctl, int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        return show_help(argv[0]);
    }
    if (argc < 2) {
        return ctl_usage_error(argv[0], "an HMP command LINE is required");
    }
    size_t len = 1;
    for (int i = 1; i < argc; i++) {
        len += strlen(argv[i]) + 1;
    }
    char *line = calloc(1, len);
    for (int i = 1; i < argc; i++) {
        strcat(line, argv[i]);
        if (i + 1 < argc) {
            strcat(line, " ");
        }
    }
    json_t *args = json_pack("{s:s}", "command-line", line);
    free(line);
    int rc;
    json_t *out = ctl_call(ctl, "human-monitor-command", args, &rc);
    json_decref(args);
    if (!out) {
        return rc;
    }
    if (ctl->json) {
        ctl_print_json(ctl, out);
    }
    /* HMP text ends its lines with \r\n, as QEMU's; HMP reports its errors
     * in the text ("Error: ..."), and so does this command, with exit 1 */
    const char *text = json_string_value(out);
    bool failed = text && !strncmp(text, "Error: ", 7);
    for (const char *p = text; !ctl->json && p && *p; p++) {
        if (*p != '\r') {
            putc(*p, failed ? stderr : stdout);
        }
    }
    json_decref(out);
    return failed ? CTL_ERR_QMP : CTL_OK;
}

static int cmd_help(struct ctl *ctl, int argc, char **argv)
{
    (void)ctl;
    if (argc < 2) {
        program_help(stdout);
        return CTL_OK;
    }
    bool self = !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h");
    const struct command *c = command_find(self ? "help" : argv[1]);
    if (!c) {
        return ctl_usage_error("help", "no command '%s'", argv[1]);
    }
    command_help(c, stdout);
    return CTL_OK;
}

/* ---- the table ---- */

const struct command ctl_commands[] = {
        {"status", "", "show whether the VM runs",
         "Prints the VM's run state (query-status): running, paused, or paused with the\n"
         "reason (prelaunch: started with -S).\n",
         cmd_status},
        {"stop", "", "pause the VM's vCPUs", "Pauses the guest (QMP stop).\n", run_plain},
        {"cont", "", "resume the VM's vCPUs", "Resumes a paused guest (QMP cont).\n", run_plain},
        {"quit", "", "end snapvm",
         "Shuts snapvm down cleanly (QMP quit): vCPUs stop, disks are flushed, image\n"
         "locks are released.\n",
         run_plain},
        {"snapshot-create", "TAG [--vmstate NODE] [--exclude NODE]...",
         "save the whole VM as snapshot TAG",
         "Saves the VM's RAM, devices and every writable disk as snapshot TAG, as a\n"
         "snapshot-save job, showing its progress.  The nodes are every writable\n"
         "top-level block node except those excluded (--exclude, repeatable, or a\n"
         "comma list), and the VM state goes to --vmstate NODE, or by default to the\n"
         "largest node of the set (never one under 4 MiB, like a UEFI varstore).\n"
         "A writable node that cannot hold snapshots (a raw varstore) is an error that\n"
         "names it: exclude it.  The guest keeps running while its RAM is written.\n",
         cmd_snapshot_create},
        {"snapshot-list", "[--tree]", "list the VM's snapshots",
         "A table of the VM's snapshots (query-snapshots): tag, id, date, VM state size,\n"
         "bytes stored, VM clock, nodes, whether it can be loaded, and the current one\n"
         "(marked *).  --tree draws each snapshot under its parent, marking the\n"
         "current one.  What the server does not report is shown as '-', with a note.\n",
         cmd_snapshot_list},
        {"snapshot-revert", "TAG [--vmstate NODE] [--exclude NODE]...",
         "load snapshot TAG into the VM",
         "Loads snapshot TAG (RAM, devices and disks) as a snapshot-load job, showing\n"
         "its progress.  The guest keeps the run state it had.  Nodes are chosen as\n"
         "for snapshot-create.\n",
         cmd_snapshot_revert},
        {"snapshot-delete", "TAG [--exclude NODE]...", "delete snapshot TAG",
         "Deletes snapshot TAG from every node that has it, as a snapshot-delete job.\n",
         cmd_snapshot_delete},
        {"snapshot-info", "TAG", "show everything known about snapshot TAG",
         "Prints one snapshot's record: id, date, VM clock and size, vmstate node,\n"
         "nodes and excluded nodes, parent and children, whether it is current, the\n"
         "bytes it stores and holds alone, whether it can be loaded (and why not), the\n"
         "VM's shape (RAM, vCPUs, devices), and each node's own entry for it.\n",
         cmd_snapshot_info},
        {"nodes", "", "list the block nodes",
         "A table of the block nodes (query-named-block-nodes): name, driver, size,\n"
         "access, the number of internal snapshots and the VM state they hold, file.\n",
         cmd_nodes},
        {"events", "[--count N] [EVENT]...", "print events as they come",
         "Follows the server's events (STOP, RESUME, SHUTDOWN, RESET,\n"
         "JOB_STATUS_CHANGE, ...), one line each, until the connection closes,\n"
         "Ctrl-C, or N events (--count).  EVENT names keep only those events.\n",
         cmd_events},
        {"qmp", "COMMAND [key=value]... | COMMAND JSON-OBJECT", "run any QMP command",
         "Runs a QMP command and prints its return value as JSON.  key=value arguments\n"
         "are typed from the server's schema (query-qmp-schema): tag=123 stays a string\n"
         "where a string is wanted, flat=on is a boolean, arrays are JSON or a,b,c.\n"
         "A single JSON object is taken as the arguments.  Errors print as\n"
         "'Class: description'.  A word that is not a snapvm-ctl command is run this\n"
         "way too: 'snapvm-ctl query-status'.\n",
         cmd_qmp},
        {"hmp", "LINE...", "run a human monitor (HMP) command",
         "Runs LINE through human-monitor-command and prints its text: info status,\n"
         "info snapshots, savevm [TAG], loadvm TAG, delvm TAG, help.\n",
         cmd_hmp},
        {"shell", "", "an interactive QMP and HMP shell",
         "Reads commands with line editing, history (~/.snapvm-ctl_history) and\n"
         "completion of command, argument and value names from the schema (Tab):\n"
         "  COMMAND [key=value]... | COMMAND {JSON}   a QMP command\n"
         "  hmp LINE                                 a human monitor command\n"
         "  status, snapshot-list, ...               the snapvm-ctl commands\n"
         "  help [COMMAND], exit (or Ctrl-D)\n"
         "Events are printed as they arrive, before the next prompt.  Ctrl-C gives a\n"
         "fresh prompt or stops a command that waits.  'quit' ends snapvm, not the\n"
         "shell.\n",
         shell_run},
        {"help", "[COMMAND]", "show the help of snapvm-ctl or of COMMAND",
         "Without COMMAND, the program's help; with one, the same as COMMAND --help.\n", cmd_help},
        {NULL, NULL, NULL, NULL, NULL},
};

const struct command *command_find(const char *name)
{
    for (const struct command *c = ctl_commands; c->name; c++) {
        if (!strcmp(c->name, name)) {
            return c;
        }
    }
    return NULL;
}

void command_help(const struct command *cmd, FILE *out)
{
    fprintf(out, "usage: snapvm-ctl [OPTIONS] %s%s%s\n\n%s: %s.\n%s%s", cmd->name,
            *cmd->synopsis ? " " : "", cmd->synopsis, cmd->name, cmd->summary,
            *cmd->help ? "\n" : "", cmd->help);
}

void program_help(FILE *out)
{
    fprintf(out, "usage: snapvm-ctl [--qmp ADDRESS] [--json] [-c] COMMAND [ARGS]\n"
                 "\n"
                 "Drives a running snapvm over its QMP socket.\n"
                 "\n"
                 "options:\n"
                 "  --qmp, -s ADDRESS  the QMP socket: PATH, HOST:PORT, unix:PATH or\n"
                 "                     tcp:HOST:PORT (default: $SNAPVM_QMP)\n"
                 "  --json             machine-readable output: one JSON document\n"
                 "  -c, --compact      JSON on one line\n"
                 "  -h, --help         this help; COMMAND --help for a command's\n"
                 "  --version          the version\n"
                 "\n"
                 "commands:\n");
    for (const struct command *c = ctl_commands; c->name; c++) {
        fprintf(out, "  %-16s %s\n", c->name, c->summary);
    }
    fprintf(out, "\n"
                 "Any other COMMAND is sent as a raw QMP command (see 'qmp').\n"
                 "Exit status: 0 success, 1 the server reported an error, 2 a usage or\n"
                 "connection error.\n");
}

int command_run(struct ctl *ctl, int argc, char **argv)
{
    const struct command *c = command_find(argv[0]);
    if (c) {
        return c->run(ctl, argc, argv);
    }
    return raw_qmp(ctl, argv[0], argc - 1, argv + 1);
}
