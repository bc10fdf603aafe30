/*
 * Character back ends (see chardev.h): fds, the unix-socket listener, the
 * input thread, and the terminal mode for an interactive stdio.
 */
#include "hw/chardev.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "util/keyval.h"
#include "util/log.h"

enum chardev_kind {
    CD_NULL,
    CD_STDIO,
    CD_FILE,
    CD_UNIX,
};

struct chardev {
    enum chardev_kind kind;
    int in_fd;
    int out_fd;
    int listen_fd;
    int wake_fd;
    char *path;
    struct chardev_handlers h;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock; /* in_fd/out_fd of a socket client, quit */
    bool quit;
    bool tty_raw;
    struct termios saved_tty;
};

static struct chardev *chardev_alloc(enum chardev_kind kind)
{
    struct chardev *cd = calloc(1, sizeof(*cd));
    if (!cd) {
        abort();
    }
    cd->kind = kind;
    cd->in_fd = cd->out_fd = cd->listen_fd = -1;
    cd->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&cd->lock, NULL);
    return cd;
}

static void stdio_init(struct chardev *cd)
{
    cd->in_fd = STDIN_FILENO;
    cd->out_fd = STDOUT_FILENO;
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &cd->saved_tty) == 0) {
        /* Characters go to the guest as typed, without local echo; ISIG
         * stays on so that Ctrl-C still shuts snapvm down cleanly. */
        struct termios t = cd->saved_tty;
        t.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ECHONL | IEXTEN);
        t.c_iflag &= ~(tcflag_t)(ICRNL | IXON);
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) {
            cd->tty_raw = true;
        }
    }
}

static int unix_listen(struct chardev *cd, const char *spec, struct error **errp)
{
    json_t *kv = keyval_parse(spec, "path", errp);
    if (!kv) {
        error_prepend(errp, "-serial");
        return -1;
    }
    const char *allowed[] = {"path", "server", "wait", NULL};
    const char *path = NULL;
    bool server = false, wait = true;
    int rc = -1;
    if (kv_check_keys(kv, allowed, "-serial", errp) < 0 ||
        kv_get_string(kv, "path", "-serial", &path, errp) < 0 ||
        kv_get_bool(kv, "server", "-serial", &server, errp) < 0 ||
        kv_get_bool(kv, "wait", "-serial", &wait, errp) < 0) {
        goto out;
    }
    path += strlen("unix:");
    if (!server) {
        error_setg(errp, "-serial unix:%s: only server=on is supported", path);
        goto out;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!*path || strlen(path) >= sizeof(sa.sun_path)) {
        error_setg(errp, "-serial: invalid socket path '%s'", path);
        goto out;
    }
    strcpy(sa.sun_path, path);
    cd->path = strdup(path);
    cd->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cd->listen_fd < 0) {
        error_setg_errno(errp, errno, "-serial: socket");
        goto out;
    }
    unlink(path);
    if (bind(cd->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(cd->listen_fd, 1) < 0) {
        error_setg_errno(errp, errno, "-serial: cannot listen on '%s'", path);
        goto out;
    }
    if (wait) {
        log_info("waiting for a connection on unix:%s (serial)", path);
        int fd = accept4(cd->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            error_setg_errno(errp, errno, "-serial: accept on '%s'", path);
            goto out;
        }
        cd->in_fd = cd->out_fd = fd;
    }
    rc = 0;
out:
    json_decref(kv);
    return rc;
}

struct chardev *chardev_new(const char *spec, struct error **errp)
{
    struct chardev *cd;
    if (strcmp(spec, "null") == 0 || strcmp(spec, "none") == 0) {
        return chardev_alloc(CD_NULL);
    }
    if (strcmp(spec, "stdio") == 0) {
        cd = chardev_alloc(CD_STDIO);
        stdio_init(cd);
        return cd;
    }
    if (strncmp(spec, "file:", 5) == 0) {
        cd = chardev_alloc(CD_FILE);
        cd->out_fd = open(spec + 5, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (cd->out_fd < 0) {
            error_setg_errno(errp, errno, "-serial: cannot open '%s'", spec + 5);
            chardev_free(cd);
            return NULL;
        }
        return cd;
    }
    if (strncmp(spec, "unix:", 5) == 0) {
        cd = chardev_alloc(CD_UNIX);
        if (unix_listen(cd, spec, errp) < 0) {
            chardev_free(cd);
            return NULL;
        }
        return cd;
    }
    error_setg(errp, "-serial: unsupported back end '%s'", spec);
    return NULL;
}

void chardev_write(struct chardev *cd, const uint8_t *buf, size_t len)
{
    pthread_mutex_lock(&cd->lock);
    int fd = cd->out_fd;
    while (fd >= 0 && len > 0) {
        ssize_t n;
        if (cd->kind == CD_UNIX) {
            n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            n = write(fd, buf, len);
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break; /* a slow or gone reader loses output, the guest never stalls */
        }
        buf += n;
        len -= (size_t)n;
    }
    pthread_mutex_unlock(&cd->lock);
}

void chardev_wake(struct chardev *cd)
{
    uint64_t one = 1;
    if (cd->wake_fd >= 0 && write(cd->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        log_warn("serial: wake-up eventfd: %s", strerror(errno));
    }
}

static void drop_client(struct chardev *cd)
{
    pthread_mutex_lock(&cd->lock);
    if (cd->kind == CD_UNIX && cd->in_fd >= 0) {
        close(cd->in_fd);
        cd->out_fd = -1;
    }
    cd->in_fd = -1;
    pthread_mutex_unlock(&cd->lock);
}

static void accept_client(struct chardev *cd)
{
    int fd = accept4(cd->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        return;
    }
    drop_client(cd);
    pthread_mutex_lock(&cd->lock);
    cd->in_fd = cd->out_fd = fd;
    pthread_mutex_unlock(&cd->lock);
}

static void read_input(struct chardev *cd)
{
    uint8_t buf[256];
    size_t room = cd->h.can_read(cd->h.opaque);
    if (room == 0) {
        return;
    }
    ssize_t n = read(cd->in_fd, buf, room < sizeof(buf) ? room : sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return;
    }
    if (n <= 0) {
        drop_client(cd); /* EOF: stdin closed or the client left */
        return;
    }
    cd->h.receive(cd->h.opaque, buf, (size_t)n);
}

static void *chardev_thread(void *arg)
{
    struct chardev *cd = arg;
    for (;;) {
        pthread_mutex_lock(&cd->lock);
        bool quit = cd->quit;
        int in_fd = cd->in_fd;
        pthread_mutex_unlock(&cd->lock);
        if (quit) {
            break;
        }
        struct pollfd pfd[3];
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = cd->wake_fd, .events = POLLIN};
        int listen_i = -1, in_i = -1;
        if (cd->listen_fd >= 0) {
            listen_i = n;
            pfd[n++] = (struct pollfd){.fd = cd->listen_fd, .events = POLLIN};
        }
        /* Poll the input only while the consumer has room for it. */
        if (in_fd >= 0 && cd->h.can_read(cd->h.opaque) > 0) {
            in_i = n;
            pfd[n++] = (struct pollfd){.fd = in_fd, .events = POLLIN};
        }
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            continue;
        }
        if (pfd[0].revents & POLLIN) {
            uint64_t v;
            if (read(cd->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
                log_warn("serial: wake-up eventfd: %s", strerror(errno));
            }
        }
        if (listen_i >= 0 && (pfd[listen_i].revents & POLLIN)) {
            accept_client(cd);
        }
        if (in_i >= 0 && (pfd[in_i].revents & (POLLIN | POLLHUP | POLLERR))) {
            read_input(cd);
        }
    }
    return NULL;
}

int chardev_start(struct chardev *cd, const struct chardev_handlers *h, struct error **errp)
{
    cd->h = *h;
    if (cd->kind == CD_NULL || cd->kind == CD_FILE) {
        return 0; /* no input */
    }
    /* The input thread takes no signals: they belong to the main loop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&cd->thread, NULL, chardev_thread, cd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        error_setg_errno(errp, rc, "cannot start the serial input thread");
        return -1;
    }
    cd->started = true;
    return 0;
}

void chardev_free(struct chardev *cd)
{
    if (!cd) {
        return;
    }
    pthread_mutex_lock(&cd->lock);
    cd->quit = true;
    pthread_mutex_unlock(&cd->lock);
    chardev_wake(cd);
    if (cd->started) {
        pthread_join(cd->thread, NULL);
    }
    if (cd->tty_raw) {
        tcsetattr(STDIN_FILENO, TCSANOW, &cd->saved_tty);
    }
    if (cd->kind == CD_UNIX || cd->kind == CD_FILE) {
        if (cd->out_fd >= 0) {
            close(cd->out_fd);
        }
    }
    if (cd->listen_fd >= 0) {
        close(cd->listen_fd);
        if (cd->path) {
            unlink(cd->path);
        }
    }
    if (cd->wake_fd >= 0) {
        close(cd->wake_fd);
    }
    free(cd->path);
    pthread_mutex_destroy(&cd->lock);
    free(cd);
}
