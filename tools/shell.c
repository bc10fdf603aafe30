/*
 * `snapvm-ctl shell`: an interactive QMP and HMP shell.  Line editing,
 * history and completion come from libedit (Debian's libedit, through its
 * readline interface), not from code of ours.  Completion reads the
 * server's schema: command names, then argument names ("key="), then the
 * values of enum and boolean arguments; after "hmp" it completes the HMP
 * command names from HMP's own help; snapshot commands complete tags.
 * A line is a snapvm-ctl command, "hmp LINE", or a raw QMP command with
 * key=value words or one JSON object; words may be quoted '...' or "...".
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include "ctl.h"

static struct ctl *shell_ctl;
static json_t *candidates; /* what the generator offers for the word at hand */
static json_t *hmp_names;  /* "info status", "savevm", ... */

/* ---- splitting a line into words ---- */

/* Words separated by blanks; '...' and "..." quote, \ escapes one character.
 * After the first word, a rest that starts with '{' is one JSON word. */
static int split_words(char *line, char **words, int max)
{
    int n = 0;
    char *in = line, *out = line;
    while (n < max) {
        while (*in == ' ' || *in == '\t') {
            in++;
        }
        if (!*in) {
            break;
        }
        if (n == 1 && *in == '{') {
            words[n++] = in;
            break;
        }
        words[n++] = out;
        char quote = 0;
        for (; *in; in++) {
            if (quote) {
                if (*in == quote) {
                    quote = 0;
                } else {
                    *out++ = *in;
                }
            } else if (*in == '\'' || *in == '"') {
                quote = *in;
            } else if (*in == '\\' && in[1]) {
                *out++ = *++in;
            } else if (*in == ' ' || *in == '\t') {
                break;
            } else {
                *out++ = *in;
            }
        }
        bool more = *in != '\0';
        *out++ = '\0';
        if (more) {
            in++;
        }
        if (out > in) {
            in = out; /* never read what was just written */
        }
    }
    return n;
}

/* ---- completion ---- */

static void add(json_t *list, const char *word)
{
    json_array_append_new(list, json_string(word));
}

static json_t *hmp_command_names(void)
{
    if (!hmp_names) {
        hmp_names = json_array();
        json_t *args = json_pack("{s:s}", "command-line", "help");
        json_t *reply = conn_execute(ctl_conn(shell_ctl), "human-monitor-command", args);
        json_decref(args);
        const char *text = json_string_value(json_object_get(reply, "return"));
        while (text && *text) {
            const char *eol = strchr(text, '\n');
            size_t len = eol ? (size_t)(eol - text) : strlen(text);
            char *line = strndup(text, len);
            char *dash = strstr(line, " -- ");
            if (dash) {
                *dash = '\0';
                /* HMP names are one word, or "info WORD" */
                size_t end = strcspn(line, " ");
                if (!strncmp(line, "info ", 5)) {
                    end = 5 + strcspn(line + 5, " ");
                }
                line[end] = '\0';
                add(hmp_names, line);
            }
            free(line);
            text = eol ? eol + 1 : "";
        }
        json_decref(reply);
    }
    return hmp_names;
}

/* Words offered after "hmp": the next word of every HMP name that starts
 * with the words typed so far. */
static void complete_hmp(json_t *out, const char *typed)
{
    size_t i;
    json_t *n;
    json_array_foreach(hmp_command_names(), i, n)
    {
        const char *name = json_string_value(n);
        size_t tl = strlen(typed);
        if (strncmp(name, typed, tl) != 0) {
            continue;
        }
        const char *rest = name + tl;
        if (tl && *rest != ' ' && typed[tl - 1] != ' ') {
            continue;
        }
        while (*rest == ' ') {
            rest++;
        }
        char *word = strndup(rest, strcspn(rest, " "));
        if (*word) {
            add(out, word);
        }
        free(word);
    }
}

static void complete_tags(json_t *out)
{
    json_t *reply = conn_execute(ctl_conn(shell_ctl), "query-snapshots", NULL);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(reply, "return"), i, s)
    {
        json_array_append(out, json_object_get(s, "tag"));
    }
    json_decref(reply);
}

static void complete_first(json_t *out)
{
    for (const struct command *c = ctl_commands; c->name; c++) {
        add(out, c->name);
    }
    add(out, "exit");
    json_t *names = schema_command_names(ctl_schema(shell_ctl));
    json_array_extend(out, names);
    json_decref(names);
}

static void complete_qmp_arg(json_t *out, const char *cmd, const char *text)
{
    json_t *schema = ctl_schema(shell_ctl);
    const char *eq = strchr(text, '=');
    if (eq) {
        char *key = strndup(text, (size_t)(eq - text));
        json_t *values = schema_arg_values(schema, cmd, key);
        size_t i;
        json_t *v;
        json_array_foreach(values, i, v)
        {
            char *word = NULL;
            if (asprintf(&word, "%s=%s", key, json_string_value(v)) < 0) {
                abort();
            }
            add(out, word);
            free(word);
        }
        json_decref(values);
        free(key);
        return;
    }
    json_t *names = schema_arg_names(schema, cmd);
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n)
    {
        char *word = NULL;
        if (asprintf(&word, "%s=", json_string_value(n)) < 0) {
            abort();
        }
        add(out, word);
        free(word);
    }
    json_decref(names);
}

static char *generator(const char *text, int state)
{
    static size_t next;
    if (!state) {
        next = 0;
    }
    size_t len = strlen(text);
    while (next < json_array_size(candidates)) {
        const char *w = json_string_value(json_array_get(candidates, next++));
        if (!strncmp(w, text, len)) {
            return strdup(w);
        }
    }
    return NULL;
}

static char **complete(const char *text, int start, int end)
{
    (void)end;
    rl_attempted_completion_over = 1; /* no file names */
    json_decref(candidates);
    candidates = json_array();
    char *before = strndup(rl_line_buffer, (size_t)start);
    char *words[64];
    int n = split_words(before, words, 64);
    const char *first = n ? words[0] : NULL;
    if (n == 0) {
        complete_first(candidates);
    } else if (!strcmp(first, "hmp")) {
        const char *typed = rl_line_buffer + strspn(rl_line_buffer, " \t") + 3;
        typed += strspn(typed, " \t");
        char *t = strndup(typed, (size_t)(rl_line_buffer + start - typed));
        complete_hmp(candidates, t);
        free(t);
    } else if (!strcmp(first, "help") && n == 1) {
        for (const struct command *c = ctl_commands; c->name; c++) {
            add(candidates, c->name);
        }
    } else if (command_find(first)) {
        if (!strncmp(first, "snapshot-", 9) && strcmp(first, "snapshot-list") && n == 1 &&
            text[0] != '-') {
            complete_tags(candidates);
        }
        if (!strcmp(first, "qmp") && n == 1) {
            json_t *names = schema_command_names(ctl_schema(shell_ctl));
            json_array_extend(candidates, names);
            json_decref(names);
        } else if (!strcmp(first, "qmp")) {
            complete_qmp_arg(candidates, words[1], text);
        }
        static const char *const opts[] = {"--vmstate", "--exclude", "--tree", "--count", "--help"};
        const struct command *c = command_find(first);
        for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
            if (strstr(c->synopsis, opts[i]) || !strcmp(opts[i], "--help")) {
                add(candidates, opts[i]);
            }
        }
    } else {
        complete_qmp_arg(candidates, first, text);
    }
    free(before);
    /* "key=" goes on with its value: no space after it */
    bool all_keys = json_array_size(candidates) > 0;
    size_t i;
    json_t *w;
    json_array_foreach(candidates, i, w)
    {
        const char *s = json_string_value(w);
        if (!strncmp(s, text, strlen(text))) {
            all_keys = all_keys && s[strlen(s) - 1] == '=';
        }
    }
    rl_completion_append_character = all_keys ? '\0' : ' ';
    return rl_completion_matches(text, generator);
}

/* ---- the loop ---- */

static void print_events(struct ctl *ctl)
{
    json_t *ev;
    while ((ev = conn_event(ctl_conn(ctl), 0))) {
        printf("event: ");
        print_event(ctl, ev);
        json_decref(ev);
    }
}

static void shell_help(void)
{
    command_help(command_find("shell"), stdout);
    printf("\nsnapvm-ctl commands:\n");
    for (const struct command *c = ctl_commands; c->name; c++) {
        if (strcmp(c->name, "shell") != 0) {
            printf("  %-16s %s\n", c->name, c->summary);
        }
    }
    printf("\nQMP commands: press Tab, or run query-commands.\n");
}

static int run_line(struct ctl *ctl, char *line, bool *leave)
{
    char *words[256];
    char *hmp = line + strspn(line, " \t");
    if (!strncmp(hmp, "hmp", 3) && (hmp[3] == ' ' || hmp[3] == '\t')) {
        /* the rest of the line goes to HMP as typed, quotes included */
        char *argv[] = {"hmp", hmp + 4, NULL};
        return command_run(ctl, 2, argv);
    }
    int n = split_words(line, words, 255);
    if (n == 0) {
        return CTL_OK;
    }
    words[n] = NULL;
    if (!strcmp(words[0], "exit")) {
        *leave = true;
        return CTL_OK;
    }
    if (!strcmp(words[0], "help") && n == 1) {
        shell_help();
        return CTL_OK;
    }
    if (!strcmp(words[0], "shell")) {
        fprintf(stderr, "snapvm-ctl: already in the shell\n");
        return CTL_ERR_USAGE;
    }
    int rc = command_run(ctl, n, words);
    if (!strcmp(words[0], "quit") && rc == CTL_OK) {
        *leave = true; /* snapvm is going away */
    }
    return rc;
}

static char *history_path(void)
{
    const char *home = getenv("HOME");
    char *path = NULL;
    if (home && *home && asprintf(&path, "%s/.snapvm-ctl_history", home) < 0) {
        abort();
    }
    return path;
}

int shell_run(struct ctl *ctl, int argc, char **argv)
{
    if (argc > 1) {
        if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
            command_help(command_find("shell"), stdout);
            return CTL_OK;
        }
        return ctl_usage_error(argv[0], "unexpected argument '%s'", argv[1]);
    }
    shell_ctl = ctl;
    ctl->in_shell = true;
    struct conn *c = ctl_conn(ctl);
    json_t *ver = json_object_get(
            json_object_get(json_object_get(conn_greeting(c), "QMP"), "version"), "qemu");
    printf("Connected to %s (QMP %lld.%lld.%lld).  Tab completes; help lists the commands; exit "
           "or Ctrl-D leaves.\n",
           conn_address(c), (long long)json_integer_value(json_object_get(ver, "major")),
           (long long)json_integer_value(json_object_get(ver, "minor")),
           (long long)json_integer_value(json_object_get(ver, "micro")));
    char *hist = history_path();
    using_history();
    stifle_history(1000);
    if (hist) {
        read_history(hist);
    }
    rl_readline_name = "snapvm-ctl";
    rl_attempted_completion_function = complete;
    rl_basic_word_break_characters = " \t";
    rl_completer_word_break_characters = (char *)" \t";
    /* Ctrl-C does not end the shell: commands that wait catch it themselves
     * (a job is cancelled, events stops) */
    struct sigaction ign = {.sa_handler = SIG_IGN}, old_int;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGINT, &ign, &old_int);
    int rc = CTL_OK; /* 0 when left with exit or Ctrl-D, whatever commands failed */
    bool leave = false;
    while (!leave) {
        print_events(ctl);
        if (conn_closed(c)) {
            fprintf(stderr, "snapvm-ctl: %s closed the connection\n", conn_address(c));
            rc = CTL_ERR_USAGE;
            break;
        }
        fflush(stdout);
        /* libedit's readline returns NULL for Ctrl-C as for Ctrl-D: the flag
         * tells them apart, and Ctrl-C just gives a fresh prompt */
        ctl_catch_sigint(true);
        char *line = readline("(snapvm) ");
        bool interrupted = ctl_interrupted();
        ctl_catch_sigint(false);
        if (!line) {
            printf("\n");
            if (interrupted) {
                continue;
            }
            break;
        }
        if (line[strspn(line, " \t")]) {
            add_history(line);
            run_line(ctl, line, &leave);
        }
        free(line);
    }
    sigaction(SIGINT, &old_int, NULL);
    if (hist) {
        write_history(hist);
        free(hist);
    }
    json_decref(candidates);
    candidates = NULL;
    json_decref(hmp_names);
    hmp_names = NULL;
    return rc;
}
