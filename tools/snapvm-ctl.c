/*
 * snapvm-ctl: a command-line QMP client.
 *
 *     snapvm-ctl -s unix:PATH|tcp:HOST:PORT COMMAND [key=value ... | JSON-OBJECT]
 *
 * It connects, negotiates capabilities, sends one command and prints its
 * "return" as JSON on stdout (exit 0), or "Class: description" on stderr
 * (exit 1).  key=value arguments are typed with the server's own schema
 * (query-qmp-schema), so `tag=123` stays a string where the command wants a
 * string and `flat=on` becomes true where it wants a boolean; arrays and
 * objects are written as JSON, or a string array as a,b,c.
 * Usage and connection errors exit 2.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

struct conn {
    int fd;
    char *buf;
    size_t len, cap;
    int next_id;
};

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "snapvm-ctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        die("socket path too long: %s", path);
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "snapvm-ctl: cannot connect to unix:%s: %s\n", path, strerror(errno));
        exit(2);
    }
    return fd;
}

static int connect_tcp(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    if (!colon) {
        die("expected tcp:HOST:PORT, got tcp:%s", addr);
    }
    char *host = strndup(addr, (size_t)(colon - addr));
    if (host[0] == '[') { /* [v6addr] */
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *list = NULL;
    int rc = getaddrinfo(*host ? host : "localhost", colon + 1, &hints, &list);
    free(host);
    if (rc != 0) {
        fprintf(stderr, "snapvm-ctl: tcp:%s: %s\n", addr, gai_strerror(rc));
        exit(2);
    }
    int fd = -1;
    for (struct addrinfo *ai = list; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(list);
    if (fd < 0) {
        fprintf(stderr, "snapvm-ctl: cannot connect to tcp:%s: %s\n", addr, strerror(errno));
        exit(2);
    }
    return fd;
}

static int connect_spec(const char *spec)
{
    if (!strncmp(spec, "unix:", 5)) {
        return connect_unix(spec + 5);
    }
    if (!strncmp(spec, "tcp:", 4)) {
        return connect_tcp(spec + 4);
    }
    die("expected -s unix:PATH or -s tcp:HOST:PORT, got '%s'", spec);
    return -1;
}

/* The next message from the server (one JSON object per line). */
static json_t *recv_msg(struct conn *c)
{
    for (;;) {
        char *eol = c->len ? memchr(c->buf, '\n', c->len) : NULL;
        if (eol) {
            size_t n = (size_t)(eol - c->buf) + 1;
            json_t *msg = json_loadb(c->buf, n, 0, NULL);
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            if (!msg) {
                die("%s", "the server sent invalid JSON");
            }
            return msg;
        }
        if (c->cap - c->len < 65536) {
            c->cap = c->cap * 2 + 65536;
            c->buf = realloc(c->buf, c->cap);
        }
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n <= 0) {
            die("%s", "the server closed the connection");
        }
        c->len += (size_t)n;
    }
}

/* Send a command and return its reply (events are skipped). */
static json_t *execute(struct conn *c, const char *name, json_t *args)
{
    int id = ++c->next_id;
    json_t *msg = json_pack("{s:s, s:i}", "execute", name, "id", id);
    if (args) {
        json_object_set(msg, "arguments", args);
    }
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    size_t len = strlen(text);
    if (send(c->fd, text, len, MSG_NOSIGNAL) != (ssize_t)len ||
        send(c->fd, "\n", 1, MSG_NOSIGNAL) != 1) {
        die("%s", "cannot send to the server");
    }
    free(text);
    for (;;) {
        json_t *reply = recv_msg(c);
        json_t *rid = json_object_get(reply, "id");
        if (json_is_integer(rid) && json_integer_value(rid) == id) {
            return reply;
        }
        json_decref(reply);
    }
}

/* ---- typing key=value arguments with the server's schema ---- */

static json_t *find_info(json_t *schema, const char *name)
{
    size_t i;
    json_t *info;
    json_array_foreach(schema, i, info)
    {
        if (!strcmp(json_string_value(json_object_get(info, "name")), name)) {
            return info;
        }
    }
    return NULL;
}

/* The SchemaInfo of argument `key` of command `cmd`, or NULL. */
static json_t *arg_type(json_t *schema, const char *cmd, const char *key)
{
    json_t *c = find_info(schema, cmd);
    json_t *args = c ? find_info(schema, json_string_value(json_object_get(c, "arg-type"))) : NULL;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(args, "members"), i, m)
    {
        if (!strcmp(json_string_value(json_object_get(m, "name")), key)) {
            return find_info(schema, json_string_value(json_object_get(m, "type")));
        }
    }
    return NULL;
}

static const char *json_type_of(json_t *schema, json_t *type)
{
    const char *meta = json_string_value(json_object_get(type, "meta-type"));
    if (!meta) {
        return "value";
    }
    if (!strcmp(meta, "builtin")) {
        return json_string_value(json_object_get(type, "json-type"));
    }
    if (!strcmp(meta, "enum")) {
        return "string";
    }
    (void)schema;
    return meta; /* "array", "object", ... */
}

static json_t *parse_bool(const char *v)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes")) {
        return json_true();
    }
    if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no")) {
        return json_false();
    }
    return json_string(v); /* let the server name the error */
}

static json_t *split_list(const char *v)
{
    json_t *list = json_array();
    char *copy = strdup(v), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        json_array_append_new(list, json_string(tok));
    }
    free(copy);
    return list;
}

static json_t *typed_value(json_t *schema, const char *cmd, const char *key, const char *v)
{
    json_t *type = arg_type(schema, cmd, key);
    const char *jt = json_type_of(schema, type);
    json_t *parsed = json_loads(v, JSON_DECODE_ANY, NULL);
    if (!strcmp(jt, "string")) {
        json_decref(parsed);
        return json_string(v);
    }
    if (!strcmp(jt, "boolean")) {
        json_decref(parsed);
        return parse_bool(v);
    }
    if (parsed) {
        return parsed;
    }
    if (!strcmp(jt, "array")) {
        return split_list(v);
    }
    return json_string(v);
}

static json_t *build_args(struct conn *c, const char *cmd, int argc, char **argv)
{
    if (argc == 0) {
        return NULL;
    }
    if (argc == 1 && argv[0][0] == '{') {
        json_error_t err;
        json_t *obj = json_loads(argv[0], 0, &err);
        if (!json_is_object(obj)) {
            die("the arguments are not a JSON object: %s", err.text);
        }
        return obj;
    }
    json_t *reply = execute(c, "query-qmp-schema", NULL);
    json_t *schema = json_object_get(reply, "return");
    json_t *args = json_object();
    for (int i = 0; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            die("expected key=value, got '%s'", argv[i]);
        }
        char *key = strndup(argv[i], (size_t)(eq - argv[i]));
        json_object_set_new(args, key, typed_value(schema, cmd, key, eq + 1));
        free(key);
    }
    json_decref(reply);
    return args;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: snapvm-ctl [-c] -s unix:PATH|tcp:HOST:PORT COMMAND "
                 "[key=value ... | JSON-OBJECT]\n"
                 "  -s SOCKET  the QMP socket of a running snapvm\n"
                 "  -c         print the result compactly (one line)\n"
                 "Prints the command's return value as JSON; on a QMP error prints\n"
                 "'Class: description' on stderr and exits 1.\n"
                 "example: snapvm-ctl -s unix:/tmp/qmp.sock human-monitor-command "
                 "command-line='info status'\n");
}

int main(int argc, char **argv)
{
    const char *spec = NULL;
    size_t flags = JSON_INDENT(2);
    int opt;
    while ((opt = getopt(argc, argv, "+s:ch")) != -1) {
        if (opt == 's') {
            spec = optarg;
        } else if (opt == 'c') {
            flags = JSON_COMPACT;
        } else {
            usage(opt == 'h' ? stdout : stderr);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (!spec || optind >= argc) {
        usage(stderr);
        return 2;
    }
    struct conn c = {.fd = connect_spec(spec)};
    json_decref(recv_msg(&c)); /* the greeting */
    json_t *reply = execute(&c, "qmp_capabilities", NULL);
    json_decref(reply);
    const char *cmd = argv[optind];
    json_t *args = build_args(&c, cmd, argc - optind - 1, argv + optind + 1);
    reply = execute(&c, cmd, args);
    json_decref(args);
    json_t *err = json_object_get(reply, "error");
    int rc = 0;
    if (err) {
        fprintf(stderr, "%s: %s\n", json_string_value(json_object_get(err, "class")),
                json_string_value(json_object_get(err, "desc")));
        rc = 1;
    } else {
        char *text = json_dumps(json_object_get(reply, "return"),
                                flags | JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
        printf("%s\n", text);
        free(text);
    }
    json_decref(reply);
    close(c.fd);
    free(c.buf);
    return rc;
}
