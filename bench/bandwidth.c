/*
 * The physical limits a snapshot benchmark is judged against, measured on
 * this machine in the same run: memcpy bandwidth, write bandwidth to a file
 * ending in fdatasync, and page-cache read bandwidth.  Prints one JSON
 * object.  Usage: bandwidth DIR [MiB]
 */
#include <fcntl.h>
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

static void file_mib_s(const char *dir, size_t bytes, double *write_bw, double *read_bw)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/bandwidth.XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    unlink(path);
    char *buf = malloc(CHUNK);
    for (size_t i = 0; i < CHUNK; i++) {
        buf[i] = (char)(i * 131 + 7); /* not zero, not trivially compressible */
    }
    double t0 = now();
    for (size_t off = 0; off < bytes; off += CHUNK) {
        if (pwrite(fd, buf, CHUNK, (off_t)off) != (ssize_t)CHUNK) {
            perror("pwrite");
            exit(1);
        }
    }
    fdatasync(fd);
    *write_bw = (double)bytes / (1 << 20) / (now() - t0);
    t0 = now();
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
    printf("{\"fdatasync_write_mib_s\": %.0f, \"pagecache_read_mib_s\": %.0f, "
           "\"memcpy_mib_s\": %.0f}\n",
           w, r, m);
    return 0;
}
