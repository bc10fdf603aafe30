/*
 * LD_PRELOAD shim for power-loss tests.  It keeps, for every 512-byte sector
 * written (pwrite) since the last fdatasync/fsync, the sector's content
 * before that first unsynced write.  With CRASH_AFTER_WRITES=N, just before
 * the (N+1)-th pwrite it simulates a power cut: each unsynced sector
 * independently keeps its new content or falls back to the synced one
 * (choice seeded by CRASH_SEED), and the process _exit()s.  Sectors are the
 * unit a disk writes atomically; anything larger may be torn.  Test-only.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define SECTOR 512
#define TABLE  (1u << 16) /* open addressing; more sectors than a test writes between syncs */

/* Test-only process state of the shim. */
static int64_t *keys; /* sector number, -1: empty */
static int *fds;
static uint8_t **data; /* content before the first unsynced write */
static size_t *slots;  /* used slots, for clearing and iterating */
static size_t used;
static long writes_left = -2;

static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pread)(int, void *, size_t, off_t);

static void init(void)
{
    if (writes_left != -2) {
        return;
    }
    real_pwrite = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    real_pread = (ssize_t(*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
    keys = malloc(TABLE * sizeof(*keys));
    fds = calloc(TABLE, sizeof(*fds));
    data = calloc(TABLE, sizeof(*data));
    slots = calloc(TABLE, sizeof(*slots));
    for (size_t i = 0; i < TABLE; i++) {
        keys[i] = -1;
    }
    const char *s = getenv("CRASH_AFTER_WRITES");
    writes_left = s ? atol(s) : -1;
    const char *seed = getenv("CRASH_SEED");
    srand(seed ? (unsigned)atol(seed) : 1);
}

static void remember(int fd, int64_t sector)
{
    size_t h = ((uint64_t)sector * 0x9e3779b97f4a7c15ull + (uint64_t)fd) % TABLE;
    while (keys[h] != -1) {
        if (keys[h] == sector && fds[h] == fd) {
            return; /* already have its synced content */
        }
        h = (h + 1) % TABLE;
    }
    if (used + 1 >= TABLE / 2) {
        abort();
    }
    keys[h] = sector;
    fds[h] = fd;
    data[h] = calloc(1, SECTOR);
    real_pread(fd, data[h], SECTOR, (off_t)sector * SECTOR);
    slots[used++] = h;
}

static void power_cut(void)
{
    for (size_t i = 0; i < used; i++) {
        size_t h = slots[i];
        if (rand() % 2) {
            real_pwrite(fds[h], data[h], SECTOR, (off_t)keys[h] * SECTOR);
        }
    }
    _exit(99);
}

static void synced(void)
{
    for (size_t i = 0; i < used; i++) {
        keys[slots[i]] = -1;
        free(data[slots[i]]);
    }
    used = 0;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    init();
    if (writes_left >= 0 && writes_left-- == 0) {
        power_cut();
    }
    for (int64_t s = off / SECTOR; n && s <= (int64_t)((off + n - 1) / SECTOR); s++) {
        remember(fd, s);
    }
    return real_pwrite(fd, buf, n, off);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    init();
    if (!real) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    synced();
    return real(fd);
}

int fsync(int fd)
{
    static int (*real)(int);
    init();
    if (!real) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    synced();
    return real(fd);
}
