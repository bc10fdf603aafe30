/*
 * The physical limits a snapshot benchmark is judged against, measured on
 * this machine in the same run: memcpy bandwidth, write bandwidth to a file
 * ending in fdatasync, and page-cache read bandwidth.  Also the time a plain
 * writer needs for the 4 KiB-interleaved pattern (one 4 KiB page of data
 * every 8 KiB, the zero pages left as holes, then fdatasync), without and
 * with its writeback started in a second thread as it goes: on ext4 every
 * hole splits the file's extents and the disk's writes, so that pattern is
 * bound by the number of writes, not by bandwidth, and this is its limit.
 * Each also direct (O_DIRECT; the interleaved pages 256 in flight on an
 * io_uring), as snapvm writes RAM: on a virtual machine allocating page-cache
 * pages can cost more than the disk, so the disk's own limit is the faster
 * of the two.  Prints one JSON object.  Usage: bandwidth DIR [MiB]
 */
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (8u << 20)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double memcpy_mib_s(size_t bytes)
{
    char *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) {
        perror("malloc");
        exit(1);
    }
    memset(a, 0x5a, bytes);
    memset(b, 0, bytes); /* fault both buffers in before timing */
    double t0 = now();
    for (int i = 0; i < 4; i++) {
        memcpy(i % 2 ? a : b, i % 2 ? b : a, bytes);
        /* The buffers escape here, so the copies cannot be optimised away. */
        __asm__ volatile("" : : "r"(a), "r"(b) : "memory");
    }
    double secs = now() - t0;
    volatile char sink = a[bytes / 2] + b[bytes / 3];
    (void)sink;
    free(a);
    free(b);
    return 4.0 * (double)bytes / (1 << 20) / secs;
}

/* A fresh, already unlinked file in dir, and a CHUNK of data to write to it. */
static int scratch_file(const char *dir, char **buf)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/bandwidth.XXXXXX", dir);
    int fd = mkstemp(path);
    *buf = malloc(CHUNK);
    if (fd < 0 || !*buf) {
        perror(path);
        exit(1);
    }
    unlink(path);
    for (size_t i = 0; i < CHUNK; i++) {
        (*buf)[i] = (char)(i * 131 + 7); /* not zero, not trivially compressible */
    }
    return fd;
}

/* Seconds to write `bytes` as CHUNK-sized pwrites from buf, then fdatasync. */
static double write_chunks(int fd, const char *buf, size_t bytes, const char *what)
{
    double t0 = now();
    for (size_t off = 0; off < bytes; off += CHUNK) {
        if (pwrite(fd, buf, CHUNK, (off_t)off) != (ssize_t)CHUNK) {
            perror(what);
            exit(1);
        }
    }
    fdatasync(fd);
    return now() - t0;
}

static void file_mib_s(const char *dir, size_t bytes, double *write_bw, double *read_bw)
{
    char *buf;
    int fd = scratch_file(dir, &buf);
    *write_bw = (double)bytes / (1 << 20) / write_chunks(fd, buf, bytes, "pwrite");
    double t0 = now();
    for (size_t off = 0; off < bytes; off += CHUNK) {
        if (pread(fd, buf, CHUNK, (off_t)off) != (ssize_t)CHUNK) {
            perror("pread");
            exit(1);
        }
    }
    *read_bw = (double)bytes / (1 << 20) / (now() - t0);
    close(fd);
    free(buf);
}

/* A fresh, already unlinked file in dir opened O_DIRECT (-1: the file system refuses it). */
static int direct_scratch(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/direct.XXXXXX", dir);
    int tmp = mkstemp(path);
    if (tmp < 0) {
        perror(path);
        exit(1);
    }
    int fd = open(path, O_WRONLY | O_DIRECT);
    unlink(path);
    close(tmp);
    return fd;
}

/* Sequential CHUNK writes with O_DIRECT, then fdatasync: MiB/s (0: no O_DIRECT here). */
static double direct_mib_s(const char *dir, size_t bytes)
{
    int fd = direct_scratch(dir);
    char *buf = aligned_alloc(4096, CHUNK);
    if (!buf) {
        perror("aligned_alloc");
        exit(1);
    }
    for (size_t i = 0; i < CHUNK; i++) {
        buf[i] = (char)(i * 131 + 7);
    }
    double mib_s =
            fd < 0 ? 0
                   : (double)bytes / (1 << 20) / write_chunks(fd, buf, bytes, "pwrite (O_DIRECT)");
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    return mib_s;
}

/* The interleaved pattern written direct, 256 pages in flight: seconds (0: no O_DIRECT). */
static double interleaved_direct_s(const char *dir, size_t span)
{
    enum { DEPTH = 256 };
    int fd = direct_scratch(dir);
    char *buf = aligned_alloc(4096, CHUNK);
    struct io_uring ring;
    if (!buf || io_uring_queue_init(DEPTH, &ring, 0) < 0) {
        perror("io_uring");
        exit(1);
    }
    if (fd < 0) {
        free(buf);
        io_uring_queue_exit(&ring);
        return 0;
    }
    memset(buf, 0x5a, CHUNK);
    double t0 = now();
    if (ftruncate(fd, (off_t)span) < 0) {
        perror("ftruncate");
        exit(1);
    }
    unsigned inflight = 0;
    for (size_t off = 0; off < span || inflight;) {
        if (off < span && inflight < DEPTH) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            io_uring_prep_write(sqe, fd, buf + off % CHUNK, 4096, off);
            off += 8192;
            if (++inflight % 16 && off < span) {
                continue; /* submit in groups of 16 */
            }
        }
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe = NULL;
        if (inflight == DEPTH || off >= span) {
            if (io_uring_wait_cqe(&ring, &cqe) < 0 || cqe->res != 4096) {
                fprintf(stderr, "direct write failed: %d\n", cqe ? cqe->res : -1);
                exit(1);
            }
            io_uring_cqe_seen(&ring, cqe);
            inflight--;
        }
    }
    fdatasync(fd);
    double secs = now() - t0;
    io_uring_queue_exit(&ring);
    close(fd);
    free(buf);
    return secs;
}

struct interleaved {
    int fd;
    size_t span;
    size_t done; /* bytes of the span written so far (atomic) */
};

/* Start the writeback of what the writer has finished, 32 MiB at a time. */
static void *writeback(void *opaque)
{
    struct interleaved *iv = opaque;
    size_t from = 0;
    while (from < iv->span) {
        size_t to = __atomic_load_n(&iv->done, __ATOMIC_ACQUIRE);
        if (to == from) {
            usleep(500);
            continue;
        }
        sync_file_range(iv->fd, (off_t)from, (off_t)(to - from), SYNC_FILE_RANGE_WRITE);
        from = to;
    }
    return NULL;
}

/* Seconds to write the interleaved pattern over `span` bytes and fdatasync. */
static double interleaved_s(const char *dir, size_t span, bool overlap)
{
    char *buf;
    int fd = scratch_file(dir, &buf);
    struct interleaved iv = {.fd = fd, .span = span};
    pthread_t th;
    double t0 = now();
    if (overlap && pthread_create(&th, NULL, writeback, &iv) != 0) {
        perror("pthread_create");
        exit(1);
    }
    for (size_t off = 0; off < span; off += 8192) {
        if (pwrite(fd, buf + off % CHUNK, 4096, (off_t)off) != 4096) {
            perror("pwrite");
            exit(1);
        }
        if ((off + 8192) % (32u << 20) == 0 || off + 8192 >= span) {
            __atomic_store_n(&iv.done, off + 8192 < span ? off + 8192 : span, __ATOMIC_RELEASE);
        }
    }
    if (ftruncate(fd, (off_t)span) < 0) {
        perror("ftruncate");
        exit(1);
    }
    if (overlap) {
        pthread_join(th, NULL);
    }
    fdatasync(fd);
    double secs = now() - t0;
    close(fd);
    free(buf);
    return secs;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [MiB]\n", argv[0]);
        return 2;
    }
    size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 1024;
    double w, r;
    file_mib_s(argv[1], mib << 20, &w, &r);
    double m = memcpy_mib_s(256u << 20);
    double iv = interleaved_s(argv[1], mib << 20, false);
    double iv_overlap = interleaved_s(argv[1], mib << 20, true);
    double dw = direct_mib_s(argv[1], mib << 20);
    double iv_direct = interleaved_direct_s(argv[1], mib << 20);
    printf("{\"fdatasync_write_mib_s\": %.0f, \"direct_write_mib_s\": %.0f, "
           "\"pagecache_read_mib_s\": %.0f, \"memcpy_mib_s\": %.0f, \"interleaved_span_mib\": %zu, "
           "\"interleaved_s\": %.3f, \"interleaved_overlap_s\": %.3f, "
           "\"interleaved_direct_s\": %.3f}\n",
           w, dw, r, m, mib, iv, iv_overlap, iv_direct);
    return 0;
}
