/*
 * The batch writer (see writer.h): up to IO_WRITER_DEPTH writes, hole
 * punches and writeback hints in flight on one io_uring, each checked with
 * the fault hook just before it is submitted.  A short write is finished
 * synchronously; a file system that cannot punch holes gets zeros written
 * instead (correct, only not sparse).  Page-aligned writes go direct
 * (writer.h says why).
 */
#include "block/writer.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/fault.h"

#define IO_WRITER_SYNC_BELOW (32u << 10)

static const uint8_t zeros[64 << 10];

void io_writer_init(struct io_writer *w, int fd, const char *path)
{
    memset(w, 0, sizeof(*w));
    w->fd = fd;
    w->path = path;
    /*
     * The ring writes through a description of its own: in-flight requests
     * hold a reference to the file they write, and a killed process's ring
     * is torn down after the process is gone.  Were it the node's own
     * description, the image's OFD locks (file.c) would outlive the process
     * for that moment and a qemu-img run right after a kill -9 would find
     * the image locked.  Locks belong to a description, so this one holds
     * none; the data lands in the same page cache, and the node's flush
     * (fdatasync of the inode) covers it.
     */
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
    int own = open(self, O_WRONLY | O_CLOEXEC);
    w->own_fd = own;
    w->dio_fd = -1;
    if (own >= 0) {
        w->fd = own;
    }
    for (unsigned i = 0; i < IO_WRITER_DEPTH; i++) {
        w->free_slots[i] = i;
    }
    w->nfree = IO_WRITER_DEPTH;
    struct io_uring *ring = calloc(1, sizeof(*ring));
    if (!ring) {
        abort();
    }
    /* No io_uring (old kernel, seccomp, io_uring_disabled): plain calls. */
    if (io_uring_queue_init(IO_WRITER_DEPTH, ring, 0) < 0) {
        free(ring);
        return;
    }
    w->ring = ring;
    /* Direct writes only on the ring: one at a time they would each wait for the disk. */
    w->dio_fd = open(self, O_WRONLY | O_CLOEXEC | O_DIRECT);
}

static void stop_direct(struct io_writer *w)
{
    if (w->dio_fd >= 0) {
        close(w->dio_fd);
        w->dio_fd = -1;
    }
}

static bool page_aligned(uint64_t v)
{
    return (v & 4095) == 0;
}

static void note_error(struct io_writer *w, int err, const struct io_writer_req *r)
{
    if (!w->err) {
        w->err = err;
        w->err_req = *r;
    }
}

/* Synchronous write of what is left of a request (fallback, short writes). */
static void write_sync(struct io_writer *w, const struct io_writer_req *r)
{
    struct io_writer_req left = *r;
    while (left.len > 0) {
        int ferr = fault_io(FAULT_WRITE, w->path, left.off, left.len);
        ssize_t n = ferr ? -1 : pwrite(w->fd, left.buf, left.len, (off_t)left.off);
        if (n < 0) {
            int e = ferr ? ferr : errno;
            if (e == EINTR) {
                continue;
            }
            note_error(w, e, r);
            return;
        }
        left.off += (uint64_t)n;
        left.buf += n;
        left.len -= (uint64_t)n;
    }
    w->bytes_written += r->len;
}

static void zero_sync(struct io_writer *w, const struct io_writer_req *r)
{
    for (uint64_t done = 0; done < r->len && !w->err;) {
        uint64_t n = r->len - done < sizeof(zeros) ? r->len - done : sizeof(zeros);
        struct io_writer_req z = {
                .off = r->off + done, .buf = zeros, .len = n, .kind = IO_WRITER_WRITE};
        write_sync(w, &z);
        done += n;
    }
}

static void punch_sync(struct io_writer *w, const struct io_writer_req *r)
{
    int ferr = fault_io(FAULT_FALLOCATE, w->path, r->off, r->len);
    if (ferr) {
        note_error(w, ferr, r);
        return;
    }
    if (fallocate(w->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)r->off,
                  (off_t)r->len) == 0) {
        w->holes_punched += r->len;
    } else if (errno == EOPNOTSUPP) {
        zero_sync(w, r);
    } else {
        note_error(w, errno, r);
    }
}

/* Account for one completion. */
static void complete(struct io_writer *w, struct io_uring_cqe *cqe)
{
    unsigned slot = (unsigned)io_uring_cqe_get_data64(cqe);
    struct io_writer_req *r = &w->reqs[slot];
    int res = cqe->res;
    switch (r->kind) {
    case IO_WRITER_WRITE:
        if (res == -EINVAL && r->direct) {
            /* The file takes no direct I/O after all: this one and the rest buffered. */
            stop_direct(w);
            write_sync(w, r);
        } else if (res < 0) {
            note_error(w, -res, r);
        } else if ((uint64_t)res < r->len) {
            struct io_writer_req rest = {.off = r->off + (uint64_t)res,
                                         .buf = r->buf + res,
                                         .len = r->len - (uint64_t)res,
                                         .kind = IO_WRITER_WRITE};
            w->bytes_written += (uint64_t)res;
            write_sync(w, &rest);
        } else {
            w->bytes_written += r->len;
        }
        break;
    case IO_WRITER_PUNCH:
        if (res == -EOPNOTSUPP) {
            zero_sync(w, r);
        } else if (res < 0) {
            note_error(w, -res, r);
        } else {
            w->holes_punched += r->len;
        }
        break;
    case IO_WRITER_WRITEBACK:
        /* Only a hint, but an I/O error now is one the flush would report. */
        if (res < 0 && res != -EINVAL && res != -EOPNOTSUPP) {
            note_error(w, -res, r);
        }
        w->inflight_hints--;
        break;
    }
    w->free_slots[w->nfree++] = slot;
    w->inflight--;
}

/*
 * Reap completions until no request other than a writeback hint is in
 * flight, or (wait false) just what is there.
 */
static void reap(struct io_writer *w, bool wait)
{
    struct io_uring_cqe *cqe;
    while (w->inflight > 0 && (!wait || w->inflight > w->inflight_hints)) {
        int rc = wait ? io_uring_wait_cqe(w->ring, &cqe) : io_uring_peek_cqe(w->ring, &cqe);
        if (rc == -EINTR) {
            continue;
        }
        if (rc < 0) {
            break; /* -EAGAIN from peek: nothing ready */
        }
        complete(w, cqe);
        io_uring_cqe_seen(w->ring, cqe);
    }
}

/* Wait for one completion, of any kind (false: none came). */
static bool wait_one(struct io_writer *w)
{
    struct io_uring_cqe *cqe;
    int rc;
    while ((rc = io_uring_wait_cqe(w->ring, &cqe)) == -EINTR) {
    }
    if (rc < 0) {
        return false;
    }
    complete(w, cqe);
    io_uring_cqe_seen(w->ring, cqe);
    return true;
}

/* Wait for all requests, hints included (teardown). */
static void reap_all(struct io_writer *w)
{
    io_uring_submit(w->ring);
    while (w->inflight > 0 && wait_one(w)) {
    }
}

static const enum fault_op fault_ops[] = {
        [IO_WRITER_WRITE] = FAULT_WRITE,
        [IO_WRITER_PUNCH] = FAULT_FALLOCATE,
        [IO_WRITER_WRITEBACK] = FAULT_FLUSH,
};

static void submit(struct io_writer *w, enum io_writer_kind kind, uint64_t off, const void *buf,
                   uint64_t len)
{
    bool direct = kind == IO_WRITER_WRITE && w->dio_fd >= 0 && page_aligned(off) &&
                  page_aligned(len) && page_aligned((uintptr_t)buf);
    struct io_writer_req r = {.off = off, .buf = buf, .len = len, .kind = kind, .direct = direct};
    if (len == 0 || w->err) {
        return;
    }
    if (!w->ring && kind == IO_WRITER_WRITEBACK) {
        return; /* a hint: not worth a blocking call of its own */
    }
    /*
     * Small writes go straight to pwrite: for a page or two, handing the
     * request to the kernel's io_uring workers costs more than the copy
     * (measured here: 4 KiB writes 1.8x slower through the ring, 512 KiB
     * ones 1.75x faster).  Direct writes always take the ring.
     */
    if (!w->ring || (kind == IO_WRITER_WRITE && !direct && len < IO_WRITER_SYNC_BELOW)) {
        kind == IO_WRITER_WRITE ? write_sync(w, &r) : punch_sync(w, &r);
        return;
    }
    int ferr = fault_io(fault_ops[kind], w->path, off, len);
    if (ferr) {
        note_error(w, ferr, &r);
        return;
    }
    if (w->nfree == 0) {
        io_uring_submit(w->ring);
        wait_one(w);
    }
    struct io_uring_sqe *sqe = w->nfree ? io_uring_get_sqe(w->ring) : NULL;
    if (!sqe && w->nfree) {
        io_uring_submit(w->ring);
        sqe = io_uring_get_sqe(w->ring);
    }
    if (!sqe) {
        if (kind != IO_WRITER_WRITEBACK) {
            kind == IO_WRITER_WRITE ? write_sync(w, &r) : punch_sync(w, &r);
        }
        return;
    }
    unsigned slot = w->free_slots[--w->nfree];
    w->reqs[slot] = r;
    switch (kind) {
    case IO_WRITER_WRITE:
        io_uring_prep_write(sqe, direct ? w->dio_fd : w->fd, buf, (unsigned)len, off);
        break;
    case IO_WRITER_PUNCH:
        io_uring_prep_fallocate(sqe, w->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
        break;
    case IO_WRITER_WRITEBACK:
        io_uring_prep_sync_file_range(sqe, w->fd, (unsigned)len, off, SYNC_FILE_RANGE_WRITE);
        w->inflight_hints++;
        break;
    }
    io_uring_sqe_set_data64(sqe, slot);
    w->inflight++;
    /* Keep the queue moving without waiting: submit in groups; a hint at once. */
    if (w->inflight % 16 == 0 || kind == IO_WRITER_WRITEBACK) {
        io_uring_submit(w->ring);
        reap(w, false);
    }
}

/* One SQE carries at most 2^31 bytes (a writeback range 2^32): split. */
static void submit_split(struct io_writer *w, enum io_writer_kind kind, uint64_t off,
                         const void *buf, uint64_t len)
{
    while (len > 0) {
        uint64_t n = len < (1u << 30) ? len : (1u << 30);
        submit(w, kind, off, buf, n);
        off += n;
        buf = buf ? (const uint8_t *)buf + n : NULL;
        len -= n;
    }
}

void io_writer_write(struct io_writer *w, uint64_t off, const void *buf, uint64_t len)
{
    submit_split(w, IO_WRITER_WRITE, off, buf, len);
}

void io_writer_punch(struct io_writer *w, uint64_t off, uint64_t len)
{
    submit(w, IO_WRITER_PUNCH, off, NULL, len);
}

void io_writer_writeback(struct io_writer *w, uint64_t off, uint64_t len)
{
    submit_split(w, IO_WRITER_WRITEBACK, off, NULL, len);
}

static const char *const kind_names[] = {
        [IO_WRITER_WRITE] = "write",
        [IO_WRITER_PUNCH] = "hole punch",
        [IO_WRITER_WRITEBACK] = "writeback",
};

void io_writer_wait(struct io_writer *w)
{
    if (w->ring && w->inflight) {
        io_uring_submit(w->ring);
        reap(w, true);
    }
}

int io_writer_drain(struct io_writer *w, struct error **errp)
{
    io_writer_wait(w);
    if (w->err) {
        error_setg_errno(errp, w->err, "%s of %llu bytes at %llu to '%s' failed",
                         kind_names[w->err_req.kind], (unsigned long long)w->err_req.len,
                         (unsigned long long)w->err_req.off, w->path);
        w->err = 0; /* reported: the writer serves the next batch */
        return -1;
    }
    return 0;
}

void io_writer_destroy(struct io_writer *w)
{
    if (w->ring) {
        reap_all(w);
        io_uring_queue_exit(w->ring);
        free(w->ring);
        w->ring = NULL;
    }
    stop_direct(w);
    if (w->own_fd >= 0) {
        close(w->own_fd);
        w->own_fd = -1;
    }
}
