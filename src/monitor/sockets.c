/*
 * The listening sockets of -qmp: "unix:PATH,server=on,wait=off" and
 * "tcp:HOST:PORT,server=on,wait=off" (also the legacy "server,nowait").
 * snapvm only serves: it never connects out, and never waits for a client
 * before the VM runs, so wait=on is refused rather than ignored.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "monitor/monitor-int.h"
#include "util/keyval.h"
#include "util/log.h"

#define BACKLOG 64

/* Rewrite the legacy bare flags into key=value form. */
static char *normalize_spec(const char *spec)
{
    char *out = calloc(1, strlen(spec) * 2 + 16);
    if (!out) {
        abort();
    }
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (p != spec && len == 6 && !strncmp(p, "server", 6)) {
            strcat(out, "server=on");
        } else if (p != spec && len == 6 && !strncmp(p, "nowait", 6)) {
            strcat(out, "wait=off");
        } else {
            strncat(out, p, len);
        }
        if (!end) {
            break;
        }
        strcat(out, ",");
        p = end + 1;
        if (*p == ',') { /* an escaped comma: copy it through */
            strcat(out, ",");
            p++;
        }
    }
    return out;
}

static int check_options(json_t *opts, const char *spec, struct error **errp)
{
    static const char *const allowed[] = {"addr", "server", "wait", NULL};
    if (kv_check_keys(opts, allowed, "-qmp", errp) < 0) {
        return -1;
    }
    bool server = false, wait = false;
    if (kv_get_bool(opts, "server", "-qmp", &server, errp) < 0 ||
        kv_get_bool(opts, "wait", "-qmp", &wait, errp) < 0) {
        return -1;
    }
    if (!server) {
        error_setg(errp, "-qmp '%s': snapvm only listens: add server=on,wait=off", spec);
        return -1;
    }
    if (wait) {
        error_setg(errp,
                   "-qmp '%s': wait=on is not supported (snapvm never waits for a "
                   "monitor client): use wait=off",
                   spec);
        return -1;
    }
    return 0;
}

/* Does a server still answer on this path (so that it is not stale)? */
static bool socket_is_live(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = fd >= 0 && connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;
    if (fd >= 0) {
        close(fd);
    }
    return live;
}

static int listen_unix(const char *path, char **unix_path, struct error **errp)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!*path || strlen(path) >= sizeof(sa.sun_path)) {
        error_setg(errp, "-qmp unix:%s: the path must have 1 to %zu bytes", path,
                   sizeof(sa.sun_path) - 1);
        return -1;
    }
    strcpy(sa.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        if (socket_is_live(&sa)) {
            error_setg(errp, "-qmp unix:%s: another process is listening on this socket", path);
            return -1;
        }
        unlink(path); /* a stale socket from an earlier run */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        error_setg_errno(errp, errno, "-qmp unix:%s: cannot bind", path);
        goto fail;
    }
    /* Before listen(): nobody can connect while the mode is still wider. */
    if (chmod(path, 0600) < 0 || listen(fd, BACKLOG) < 0) {
        error_setg_errno(errp, errno, "-qmp unix:%s", path);
        unlink(path);
        goto fail;
    }
    *unix_path = strdup(path);
    return fd;
fail:
    if (fd >= 0) {
        close(fd);
    }
    return -1;
}

/* "HOST:PORT", "[V6ADDR]:PORT" or ":PORT" (all interfaces). */
static int split_host_port(const char *addr, char **host, char **port, struct error **errp)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || !colon[1]) {
        error_setg(errp, "-qmp tcp:%s: expected tcp:HOST:PORT", addr);
        return -1;
    }
    size_t hlen = (size_t)(colon - addr);
    if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
        *host = strndup(addr + 1, hlen - 2);
    } else {
        *host = strndup(addr, hlen);
    }
    *port = strdup(colon + 1);
    return 0;
}

static void log_bound_port(int fd, const char *host)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char hbuf[NI_MAXHOST], pbuf[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
        getnameinfo((struct sockaddr *)&ss, len, hbuf, sizeof(hbuf), pbuf, sizeof(pbuf),
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
        log_info("QMP listening on tcp:%s:%s", *host ? host : hbuf, pbuf);
    }
}

static int bind_first(struct addrinfo *list, const char *addr, struct error **errp)
{
    int err = 0;
    for (struct addrinfo *ai = list; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        int one = 1;
        if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, BACKLOG) == 0) {
            return fd;
        }
        err = errno;
        if (fd >= 0) {
            close(fd);
        }
    }
    error_setg_errno(errp, err, "-qmp tcp:%s: cannot listen", addr);
    return -1;
}

static int listen_tcp(const char *addr, struct error **errp)
{
    char *host = NULL, *port = NULL;
    if (split_host_port(addr, &host, &port, errp) < 0) {
        return -1;
    }
    struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM};
    struct addrinfo *list = NULL;
    int rc = getaddrinfo(*host ? host : NULL, port, &hints, &list);
    int fd = -1;
    if (rc != 0) {
        error_setg(errp, "-qmp tcp:%s: %s", addr, gai_strerror(rc));
    } else {
        fd = bind_first(list, addr, errp);
        freeaddrinfo(list);
    }
    if (fd >= 0 && !strcmp(port, "0")) {
        log_bound_port(fd, host);
    }
    free(host);
    free(port);
    return fd;
}

int qmp_socket_listen(const char *spec, char **unix_path, struct error **errp)
{
    char *norm = normalize_spec(spec);
    json_t *opts = keyval_parse(norm, "addr", errp);
    free(norm);
    const char *addr = json_string_value(json_object_get(opts, "addr"));
    int fd = -1;
    *unix_path = NULL;
    if (opts && (!addr || (strncmp(addr, "unix:", 5) && strncmp(addr, "tcp:", 4)))) {
        error_setg(errp, "-qmp '%s': expected unix:PATH or tcp:HOST:PORT", spec);
    } else if (opts && check_options(opts, spec, errp) == 0) {
        fd = !strncmp(addr, "unix:", 5) ? listen_unix(addr + 5, unix_path, errp)
                                        : listen_tcp(addr + 4, errp);
    }
    json_decref(opts);
    return fd;
}
