/*
 * The "file" protocol driver: a host file, read and written with
 * pread/pwrite, flushed with fdatasync, and protected by the same OFD
 * byte-range locks that QEMU's file-posix driver takes, so that QEMU and
 * snapvm can never both write one image.
 *
 * Lock scheme (QEMU's, facts observed on its images): permission bit i is
 * 0 consistent-read, 1 write, 2 write-unchanged, 3 resize.  A user holding
 * permission i takes a shared (F_RDLCK) lock on byte 100 + i; a user that
 * does not let others have permission i takes a shared lock on byte 200 + i.
 * Shared locks never conflict with each other, so taking them always works;
 * the conflicts are found by testing (F_OFD_GETLK with F_WRLCK) whether any
 * other open file description holds the byte opposite to ours.  A writer
 * holds {read, write, resize} and denies {write, resize}; a reader holds
 * {read} and denies {write, resize}, exactly as QEMU does for a format
 * node's image file; a force-share=on reader (qemu-img -U) denies nothing.
 *
 * OFD locks do not tell who holds them (l_pid is -1), so on a conflict we
 * look for the holder in /proc (processes with the same file open) to name
 * it in the error: "qemu-system-x86 (pid 1234)".
 *
 * Every host I/O below first asks the fault-injection hook (fault.h) whether
 * to fail instead; the hook is a no-op unless a test turned it on.
 */
#include "block/block-int.h"
#include "block/fault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/keyval.h"

#define LOCK_PERM_BASE   100
#define LOCK_SHARED_BASE 200
#define PERM_READ        0
#define PERM_WRITE       1
#define PERM_RESIZE      3
#define PERM_COUNT       4

static const char *const perm_names[PERM_COUNT] = {
        "consistent read",
        "write",
        "write unchanged",
        "resize",
};

struct file_state {
    int fd;
};

static const char *const file_opts[] = {"filename", "locking", "aio", NULL};

static int lock_byte(int fd, off_t byte, struct error **errp, const char *filename)
{
    struct flock fl = {
            .l_type = F_RDLCK,
            .l_whence = SEEK_SET,
            .l_start = byte,
            .l_len = 1,
    };
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        error_setg_errno(errp, errno, "Failed to lock byte %lld of '%s'", (long long)byte,
                         filename);
        return -1;
    }
    return 0;
}

/* True if another open file description holds a lock on `byte`. */
static int byte_locked_by_other(int fd, off_t byte, bool *locked)
{
    struct flock fl = {
            .l_type = F_WRLCK,
            .l_whence = SEEK_SET,
            .l_start = byte,
            .l_len = 1,
    };
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        return -1;
    }
    *locked = fl.l_type != F_UNLCK;
    return 0;
}

/* Does process `pid` have the file (dev, ino) open (on a descriptor other than `skip_fd`)? */
static bool process_has_file(const char *pid, dev_t dev, ino_t ino, int skip_fd)
{
    char dirpath[300];
    snprintf(dirpath, sizeof(dirpath), "/proc/%s/fd", pid);
    DIR *d = opendir(dirpath);
    if (!d) {
        return false;
    }
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        char p[600];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", dirpath, e->d_name);
        found = e->d_name[0] != '.' && atoi(e->d_name) != skip_fd && stat(p, &st) == 0 &&
                st.st_dev == dev && st.st_ino == ino;
    }
    closedir(d);
    return found;
}

/* Best effort: " It is open in qemu-system-x86 (pid 1234)." (or this process) or "". */
static void describe_holder(int fd, char *out, size_t outlen)
{
    struct stat st;
    out[0] = 0;
    DIR *proc = opendir("/proc");
    if (!proc || fstat(fd, &st) < 0) {
        if (proc) {
            closedir(proc);
        }
        return;
    }
    char self[32];
    snprintf(self, sizeof(self), "%d", (int)getpid());
    struct dirent *e;
    while ((e = readdir(proc)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || !strcmp(e->d_name, self) ||
            !process_has_file(e->d_name, st.st_dev, st.st_ino, -1)) {
            continue;
        }
        char commpath[300], comm[64] = "?";
        snprintf(commpath, sizeof(commpath), "/proc/%s/comm", e->d_name);
        FILE *f = fopen(commpath, "r");
        if (f) {
            if (fgets(comm, sizeof(comm), f)) {
                comm[strcspn(comm, "\n")] = 0;
            }
            fclose(f);
        }
        snprintf(out, outlen, " It is open in %.64s (pid %.32s).", comm, e->d_name);
        break;
    }
    closedir(proc);
    if (!out[0] && process_has_file(self, st.st_dev, st.st_ino, fd)) {
        snprintf(out, outlen, " It is already open in this process (another block node).");
    }
}

static void lock_conflict(int fd, bool shared, int perm, const char *filename, struct error **errp)
{
    char holder[400];
    describe_holder(fd, holder, sizeof(holder));
    error_setg(errp, "Failed to get %s\"%s\" lock: Is another process using the image [%s]?%s",
               shared ? "shared " : "", perm_names[perm], filename, holder);
}

static int apply_locks(int fd, bool writable, bool force_share, const char *filename,
                       struct error **errp)
{
    unsigned held = 1u << PERM_READ;
    unsigned denied = force_share ? 0 : (1u << PERM_WRITE) | (1u << PERM_RESIZE);
    if (writable) {
        held |= (1u << PERM_WRITE) | (1u << PERM_RESIZE);
    }
    for (int i = 0; i < PERM_COUNT; i++) {
        if ((held & (1u << i)) && lock_byte(fd, LOCK_PERM_BASE + i, errp, filename) < 0) {
            return -1;
        }
        if ((denied & (1u << i)) && lock_byte(fd, LOCK_SHARED_BASE + i, errp, filename) < 0) {
            return -1;
        }
    }
    /* Now look for the other side of each lock: someone who denies what we
     * hold, or holds what we deny. */
    for (int i = 0; i < PERM_COUNT; i++) {
        bool locked = false;
        if ((held & (1u << i))) {
            if (byte_locked_by_other(fd, LOCK_SHARED_BASE + i, &locked) < 0) {
                error_setg_errno(errp, errno, "Failed to test the locks of '%s'", filename);
                return -1;
            }
            if (locked) {
                lock_conflict(fd, false, i, filename, errp);
                return -1;
            }
        }
        if ((denied & (1u << i))) {
            if (byte_locked_by_other(fd, LOCK_PERM_BASE + i, &locked) < 0) {
                error_setg_errno(errp, errno, "Failed to test the locks of '%s'", filename);
                return -1;
            }
            if (locked) {
                lock_conflict(fd, true, i, filename, errp);
                return -1;
            }
        }
    }
    return 0;
}

static int parse_locking(json_t *opts, bool *locking, struct error **errp)
{
    const char *s = NULL;
    if (kv_get_string(opts, "locking", "file", &s, errp) < 0) {
        return -1;
    }
    if (!s || !strcmp(s, "auto") || !strcmp(s, "on")) {
        *locking = true;
    } else if (!strcmp(s, "off")) {
        *locking = false;
    } else {
        error_setg(errp, "option 'locking' expects 'on', 'off' or 'auto', got '%s'", s);
        return -1;
    }
    return 0;
}

static int file_open(struct block_node *node, json_t *opts, struct error **errp)
{
    const char *filename = NULL;
    bool locking = true;
    if (kv_get_string(opts, "filename", "file", &filename, errp) < 0 ||
        parse_locking(opts, &locking, errp) < 0) {
        return -1;
    }
    if (!filename || !*filename) {
        error_setg(errp, "driver 'file' needs option 'filename'");
        return -1;
    }
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (nor a device
     * for carrier); what is not a regular file or block device is refused
     * before anything reads from it. */
    int fd = open(filename, (node->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        error_setg_errno(errp, errno, "could not open '%s'%s", filename,
                         node->read_only ? "" : " for writing");
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "could not stat '%s'", filename);
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        error_setg(errp, "'%s' is %s, not an image file (a regular file or block device)", filename,
                   S_ISDIR(st.st_mode)    ? "a directory"
                   : S_ISFIFO(st.st_mode) ? "a FIFO"
                   : S_ISCHR(st.st_mode)  ? "a character device"
                   : S_ISSOCK(st.st_mode) ? "a socket"
                                          : "not a regular file");
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        error_setg_errno(errp, errno, "could not set up '%s'", filename);
        close(fd);
        return -1;
    }
    if (locking && apply_locks(fd, !node->read_only, node->force_share, filename, errp) < 0) {
        close(fd); /* closing the description drops every lock it took */
        return -1;
    }
    struct file_state *s = calloc(1, sizeof(*s));
    if (!s) {
        abort();
    }
    s->fd = fd;
    node->opaque = s;
    if (!node->filename) {
        node->filename = strdup(filename);
    }
    return 0;
}

static void file_close(struct block_node *node)
{
    struct file_state *s = node->opaque;
    if (s) {
        close(s->fd);
        free(s);
        node->opaque = NULL;
    }
}

uint64_t file_node_size(struct block_node *node)
{
    struct file_state *s = node->opaque;
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        return 0;
    }
    return (uint64_t)st.st_size;
}

static uint64_t file_length(struct block_node *node)
{
    return file_node_size(node);
}

int file_node_truncate(struct block_node *node, uint64_t size, struct error **errp)
{
    struct file_state *s = node->opaque;
    int ferr = fault_io(FAULT_TRUNCATE, node->filename, size, 0);
    if (ferr) {
        errno = ferr;
    }
    if (ferr || ftruncate(s->fd, (off_t)size) < 0) {
        error_setg_errno(errp, errno, "could not resize '%s'", node->filename);
        return -1;
    }
    return 0;
}

/* Reads past the end of the file yield zeros, as for a sparse hole. */
static int file_pread(struct block_node *node, uint64_t off, void *buf, size_t len,
                      struct error **errp)
{
    struct file_state *s = node->opaque;
    uint8_t *p = buf;
    while (len > 0) {
        int ferr = fault_io(FAULT_READ, node->filename, off, len);
        if (ferr) {
            errno = ferr;
        }
        ssize_t n = ferr ? -1 : pread(s->fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            error_setg_errno(errp, errno, "read of %zu bytes at %llu from '%s' failed", len,
                             (unsigned long long)off, node->filename);
            return -1;
        }
        if (n == 0) {
            memset(p, 0, len);
            return 0;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

static int file_pwrite(struct block_node *node, uint64_t off, const void *buf, size_t len,
                       struct error **errp)
{
    struct file_state *s = node->opaque;
    const uint8_t *p = buf;
    if (node->read_only) {
        error_setg(errp, "'%s' is open read-only", node->filename);
        return -1;
    }
    while (len > 0) {
        int ferr = fault_io(FAULT_WRITE, node->filename, off, len);
        if (ferr) {
            errno = ferr;
        }
        ssize_t n = ferr ? -1 : pwrite(s->fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            error_setg_errno(errp, errno, "write of %zu bytes at %llu to '%s' failed", len,
                             (unsigned long long)off, node->filename);
            return -1;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

static int file_flush(struct block_node *node, struct error **errp)
{
    struct file_state *s = node->opaque;
    if (node->no_flush || node->read_only) {
        return 0;
    }
    int ferr = fault_io(FAULT_FLUSH, node->filename, 0, 0);
    if (ferr) {
        errno = ferr;
    }
    if (ferr || fdatasync(s->fd) < 0) {
        error_setg_errno(errp, errno, "flush of '%s' failed", node->filename);
        return -1;
    }
    return 0;
}

static int file_host_fd(struct block_node *node)
{
    struct file_state *s = node->opaque;
    return s->fd;
}

const struct block_driver block_driver_file = {
        .name = "file",
        .is_protocol = true,
        .extra_opts = file_opts,
        .open = file_open,
        .close = file_close,
        .length = file_length,
        .pread = file_pread,
        .pwrite = file_pwrite,
        .flush = file_flush,
        .host_fd = file_host_fd,
};
