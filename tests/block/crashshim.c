/*
 * LD_PRELOAD shim for crash-consistency tests: with CRASH_AFTER_WRITES=N in
 * the environment, the process dies (_exit(99), like a kill -9: nothing is
 * flushed or closed) just before its (N+1)-th pwrite, so a test can stop
 * snapvm's block layer between any two of its writes and check the image.
 * snapvm is built with _FILE_OFFSET_BITS=64, so its pwrite() calls are
 * pwrite64().  Not linked into anything; loaded only by tests.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static long writes_left = -1; /* test-only process state: the countdown */

static void countdown(void)
{
    if (writes_left < 0) {
        const char *s = getenv("CRASH_AFTER_WRITES");
        writes_left = s ? atol(s) : 1L << 62;
    }
    if (writes_left-- == 0) {
        _exit(99);
    }
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) {
        real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    }
    countdown();
    return real(fd, buf, n, off);
}
