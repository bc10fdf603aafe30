/*
 * The QMP connection of snapvm-ctl: address parsing, connecting, the
 * greeting and capability negotiation, and the framing (one JSON object per
 * line, as snapvm and QEMU send them).  Replies are matched to commands by
 * "id"; events that arrive in between are queued, so that a command's
 * caller and an event follower (progress, `events`) can share one socket.
 */
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"

struct conn {
    int fd;
    char *buf;
    size_t len, cap;
    int next_id;
    bool closed;
    json_t *events; /* queued, oldest first */
    json_t *greeting;
    char *address;
};

static void fail(const char *address, const char *what, int err)
{
    fprintf(stderr, "snapvm-ctl: cannot connect to %s: %s%s%s\n", address, what, err ? ": " : "",
            err ? strerror(err) : "");
    exit(CTL_ERR_USAGE);
}

static int connect_unix(const char *address, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fail(address, "the socket path is too long", 0);
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fail(address, "connect", errno);
    }
    return fd;
}

static int connect_tcp(const char *address, const char *hostport)
{
    const char *colon = strrchr(hostport, ':');
    if (!colon || !colon[1]) {
        fail(address, "expected tcp:HOST:PORT", 0);
    }
    char *host = strndup(hostport, (size_t)(colon - hostport));
    if (host[0] == '[') { /* [v6addr]:port */
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *list = NULL;
    int rc = getaddrinfo(*host ? host : "localhost", colon + 1, &hints, &list);
    free(host);
    if (rc != 0) {
        fail(address, gai_strerror(rc), 0);
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = list; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(list);
    if (fd < 0) {
        fail(address, "connect", err);
    }
    return fd;
}

/* HOST:PORT (a numeric port after the last colon, no slash) means TCP. */
static bool looks_like_host_port(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || strchr(s, '/') || !colon[1]) {
        return false;
    }
    for (const char *p = colon + 1; *p; p++) {
        if (!isdigit((unsigned char)*p)) {
            return false;
        }
    }
    return true;
}

static int connect_address(struct conn *c, const char *addr)
{
    if (!strncmp(addr, "unix:", 5)) {
        c->address = strdup(addr);
        return connect_unix(addr, addr + 5);
    }
    if (!strncmp(addr, "tcp:", 4)) {
        c->address = strdup(addr);
        return connect_tcp(addr, addr + 4);
    }
    if (looks_like_host_port(addr)) {
        if (asprintf(&c->address, "tcp:%s", addr) < 0) {
            abort();
        }
        return connect_tcp(c->address, addr);
    }
    if (asprintf(&c->address, "unix:%s", addr) < 0) {
        abort();
    }
    return connect_unix(c->address, addr);
}

/* Read more bytes, waiting at most timeout_ms (-1: forever).  0 on timeout. */
static int fill(struct conn *c, int timeout_ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int n = poll(&p, 1, timeout_ms);
    if (n < 0 && errno == EINTR) {
        return 0;
    }
    if (n <= 0) {
        return 0;
    }
    if (c->cap - c->len < 65536) {
        c->cap = c->cap * 2 + 65536;
        c->buf = realloc(c->buf, c->cap);
        if (!c->buf) {
            abort();
        }
    }
    ssize_t got = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (got <= 0) {
        c->closed = true;
        return -1;
    }
    c->len += (size_t)got;
    return 1;
}

/* The next whole message, or NULL on timeout or close. */
static json_t *next_message(struct conn *c, int timeout_ms)
{
    for (;;) {
        char *eol = c->len ? memchr(c->buf, '\n', c->len) : NULL;
        if (eol) {
            size_t n = (size_t)(eol - c->buf) + 1;
            json_error_t jerr;
            json_t *msg = json_loadb(c->buf, n, 0, &jerr);
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            if (!msg) {
                fprintf(stderr, "snapvm-ctl: %s sent invalid JSON: %s\n", c->address, jerr.text);
                exit(CTL_ERR_USAGE);
            }
            return msg;
        }
        if (c->closed) {
            return NULL;
        }
        int got = fill(c, timeout_ms);
        if (got < 0 || (got == 0 && timeout_ms >= 0)) {
            return NULL; /* closed, or timed out (or a signal: the caller looks) */
        }
    }
}

static void lost(struct conn *c)
{
    fprintf(stderr, "snapvm-ctl: %s closed the connection\n", c->address);
    exit(CTL_ERR_USAGE);
}

struct conn *conn_connect(const char *addr)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        abort();
    }
    c->events = json_array();
    c->fd = connect_address(c, addr);
    c->greeting = next_message(c, 10000);
    if (!c->greeting || !json_object_get(c->greeting, "QMP")) {
        fprintf(stderr, "snapvm-ctl: %s did not greet with QMP\n", c->address);
        exit(CTL_ERR_USAGE);
    }
    json_t *reply = conn_execute(c, "qmp_capabilities", NULL);
    if (json_object_get(reply, "error")) {
        fprintf(stderr, "snapvm-ctl: %s: qmp_capabilities: %s\n", c->address,
                json_string_value(json_object_get(json_object_get(reply, "error"), "desc")));
        exit(CTL_ERR_USAGE);
    }
    json_decref(reply);
    return c;
}

void conn_close(struct conn *c)
{
    if (!c) {
        return;
    }
    close(c->fd);
    free(c->buf);
    free(c->address);
    json_decref(c->events);
    json_decref(c->greeting);
    free(c);
}

static json_t *execute(struct conn *c, const char *name, json_t *args, bool eof_ok);

json_t *conn_execute(struct conn *c, const char *name, json_t *args)
{
    return execute(c, name, args, false);
}

json_t *conn_execute_or_eof(struct conn *c, const char *name, json_t *args)
{
    return execute(c, name, args, true);
}

static json_t *execute(struct conn *c, const char *name, json_t *args, bool eof_ok)
{
    int id = ++c->next_id;
    json_t *msg = json_pack("{s:s, s:i}", "execute", name, "id", id);
    if (args) {
        json_object_set(msg, "arguments", args);
    }
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    /* one send with its newline: a server may act on the object (quit) and
     * close before a second send */
    size_t len = strlen(text);
    text = realloc(text, len + 2);
    if (!text) {
        abort();
    }
    text[len++] = '\n';
    text[len] = '\0';
    bool ok = send(c->fd, text, len, MSG_NOSIGNAL) == (ssize_t)len;
    free(text);
    if (!ok) {
        if (eof_ok) {
            return NULL;
        }
        lost(c);
    }
    for (;;) {
        json_t *reply = next_message(c, -1);
        if (!reply && c->closed) {
            if (eof_ok) {
                return NULL;
            }
            lost(c);
        }
        if (!reply) {
            continue; /* a signal */
        }
        if (json_object_get(reply, "event")) {
            json_array_append_new(c->events, reply);
            continue;
        }
        json_t *rid = json_object_get(reply, "id");
        if (json_is_integer(rid) && json_integer_value(rid) == id) {
            return reply;
        }
        json_decref(reply); /* not ours (cannot happen on a private socket) */
    }
}

json_t *conn_event(struct conn *c, int timeout_ms)
{
    for (;;) {
        if (json_array_size(c->events)) {
            json_t *ev = json_incref(json_array_get(c->events, 0));
            json_array_remove(c->events, 0);
            return ev;
        }
        json_t *msg = next_message(c, timeout_ms);
        if (!msg) {
            return NULL;
        }
        if (json_object_get(msg, "event")) {
            return msg;
        }
        json_decref(msg); /* a stray reply */
    }
}

bool conn_closed(const struct conn *c)
{
    return c->closed && c->len == 0;
}

json_t *conn_greeting(const struct conn *c)
{
    return c->greeting;
}

const char *conn_address(const struct conn *c)
{
    return c->address;
}
