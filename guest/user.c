/*
 * The user half of the built-in guest (ring 3, native speed on this host).
 *
 * A loop that takes command lines queued by the serial ISR, answers each with
 * exactly one line, and otherwise either dirties memory at the requested rate
 * or sleeps in the kernel until the next interrupt.  Heavy loops (fill, sum,
 * dirty) run here so that the emulated CPL0 path stays tiny; the timer still
 * preempts them, so ticks keep coming during a long sum.
 */
#include "guest.h"

#define MiB (1024ULL * 1024ULL)

/* Dirtying state: rate in MiB/s, progress measured in bytes since start. */
static uint64_t dirty_rate;
static uint64_t dirty_start;
static uint64_t dirty_done;
static uint64_t dirty_pos;
static uint64_t dirty_gen;

static uint8_t sector[512] __attribute__((aligned(16)));

static uint64_t sys(uint64_t nr, uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    register uint64_t r10 __asm__("r10") = d;
    __asm__ volatile("int $0x80" : "+a"(nr) : "D"(a), "S"(b), "d"(c), "r"(r10) : "memory");
    return nr;
}

static void reply(const char *s)
{
    sys(SYS_PRINT, (uint64_t)s, strlen(s), 0, 0);
}

static void reply2(const char *prefix, const char *s)
{
    char buf[CMD_MAX + 32];
    size_t pos = 0;
    fmt_str(buf, sizeof(buf), &pos, prefix);
    fmt_str(buf, sizeof(buf), &pos, s);
    reply(buf);
}

static void reply_num(const char *prefix, uint64_t v, bool hex)
{
    char buf[64];
    size_t pos = 0;
    fmt_str(buf, sizeof(buf), &pos, prefix);
    if (hex) {
        fmt_hex16(buf, sizeof(buf), &pos, v);
    } else {
        fmt_dec(buf, sizeof(buf), &pos, v);
    }
    reply(buf);
}

/* The data region as one logical array of words, across RAM ranges. */
static uint64_t *data_word_ptr(uint64_t byte_off)
{
    for (uint32_t i = 0; i < g.nr_data; i++) {
        if (byte_off < g.data[i].size) {
            return (uint64_t *)(g.data[i].base + byte_off);
        }
        byte_off -= g.data[i].size;
    }
    return 0;
}

static uint64_t region_sum(void)
{
    uint64_t acc = 0, idx = 0;
    for (uint32_t r = 0; r < g.nr_data; r++) {
        const uint64_t *w = (const uint64_t *)g.data[r].base;
        uint64_t n = g.data[r].size / 8;
        for (uint64_t i = 0; i < n; i++) {
            acc += sum_word(w[i], idx + i);
        }
        idx += n;
    }
    return sum_final(acc, idx);
}

/* The first `bytes` of the data region: the pattern of `seed`, or zeros. */
static void region_fill(uint64_t seed, uint64_t bytes, bool zero)
{
    uint64_t idx = 0;
    for (uint32_t r = 0; r < g.nr_data && bytes; r++) {
        uint64_t *w = (uint64_t *)g.data[r].base;
        uint64_t len = g.data[r].size < bytes ? g.data[r].size : bytes;
        for (uint64_t i = 0; i < len / 8; i++) {
            w[i] = zero ? 0 : fill_word(seed, idx + i);
        }
        idx += len / 8;
        bytes -= len;
    }
}

/*
 * The first `bytes` of the data region, page by page: page p the pattern of
 * `seed` or zeros, at random (bit 0 of fill_word(~seed, p)): zero pages
 * scattered among data, as a snapshot packs them.
 */
static void region_sparse(uint64_t seed, uint64_t bytes)
{
    uint64_t idx = 0, page = 0;
    for (uint32_t r = 0; r < g.nr_data && bytes; r++) {
        uint64_t len = g.data[r].size < bytes ? g.data[r].size : bytes;
        for (uint64_t off = 0; off < len; off += 4096, page++) {
            uint64_t *w = (uint64_t *)(g.data[r].base + off);
            bool zero = fill_word(~seed, page) & 1;
            for (uint64_t i = 0; i < 512; i++) {
                w[i] = zero ? 0 : fill_word(seed, idx + off / 8 + i);
            }
        }
        idx += len / 8;
        bytes -= len;
    }
}

static uint64_t sector_sum(void)
{
    const uint64_t *w = (const uint64_t *)sector;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < 64; i++) {
        acc += sum_word(w[i], i);
    }
    return sum_final(acc, 64);
}

/* Split `s` in place into at most `max` space-separated words. */
static int split(char *s, char **argv, int max)
{
    int n = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t') {
            *s++ = 0;
        }
        if (!*s) {
            break;
        }
        if (n == max) {
            return max + 1;
        }
        argv[n++] = s;
        while (*s && *s != ' ' && *s != '\t') {
            s++;
        }
    }
    return n;
}

static bool arg_u64(const char *s, uint64_t *out)
{
    if (!parse_u64(s, out)) {
        reply2("error: bad number ", s);
        return false;
    }
    return true;
}

/*
 * fill SEED MB, zero MB (zero pages: what a snapshot stores as nothing), or
 * sparse SEED MB (half the pages zero, at random).
 */
static void cmd_fill(char **argv, bool zero, bool sparse)
{
    uint64_t seed = 0, mb;
    if ((!zero && !arg_u64(argv[1], &seed)) || !arg_u64(argv[zero ? 1 : 2], &mb)) {
        return;
    }
    if (mb > g.data_bytes / MiB) {
        char buf[64];
        size_t pos = 0;
        fmt_str(buf, sizeof(buf), &pos, "error: region too small (");
        fmt_dec(buf, sizeof(buf), &pos, g.data_bytes / MiB);
        fmt_str(buf, sizeof(buf), &pos, " MiB)");
        reply(buf);
        return;
    }
    if (sparse) {
        region_sparse(seed, mb * MiB);
    } else {
        region_fill(seed, mb * MiB, zero);
    }
    reply("ok");
}

static void cmd_dirty(char **argv)
{
    uint64_t rate;
    if (!arg_u64(argv[1], &rate)) {
        return;
    }
    if (rate && g.data_bytes < 4096) {
        reply("error: region too small");
        return;
    }
    dirty_rate = rate;
    dirty_start = g.jiffies;
    dirty_done = 0;
    reply("ok");
}

static void disk_error(int rc)
{
    reply(rc == DISK_ENODEV   ? "error: no such disk"
          : rc == DISK_ERANGE ? "error: LBA out of range"
                              : "error: disk I/O failed");
}

static void cmd_disk(int argc, char **argv)
{
    uint64_t d, lba, seed = 0;
    bool write = argc == 5 && streq(argv[1], "write");
    bool read = argc == 4 && streq(argv[1], "read");
    if (!write && !read) {
        reply("error: usage: disk write D LBA SEED | disk read D LBA");
        return;
    }
    if (!arg_u64(argv[2], &d) || !arg_u64(argv[3], &lba) || (write && !arg_u64(argv[4], &seed))) {
        return;
    }
    if (d >= g.nr_disks) {
        reply_num("error: no such disk ", d, false);
        return;
    }
    if (write) {
        uint64_t *w = (uint64_t *)sector;
        for (uint64_t i = 0; i < 64; i++) {
            w[i] = fill_word(seed, i);
        }
    }
    int rc = (int)(int64_t)sys(SYS_DISK, d, lba, (uint64_t)sector, write);
    if (rc) {
        disk_error(rc);
    } else if (write) {
        reply("ok");
    } else {
        reply_num("disk ", sector_sum(), true);
    }
}

static void run_command(char *line)
{
    char *argv[6];
    if (line[0] == CMD_TOO_LONG) {
        reply("error: line too long");
        return;
    }
    int argc = split(line, argv, 5);
    if (argc == 0) {
        return;
    }
    if (argc > 5) {
        reply("error: too many arguments");
    } else if (streq(argv[0], "tick") && argc == 1) {
        reply_num("tick ", g.ticks, false);
    } else if (streq(argv[0], "sum") && argc == 1) {
        reply_num("sum ", region_sum(), true);
    } else if (streq(argv[0], "fill") && argc == 3) {
        cmd_fill(argv, false, false);
    } else if (streq(argv[0], "sparse") && argc == 3) {
        cmd_fill(argv, false, true);
    } else if (streq(argv[0], "zero") && argc == 2) {
        cmd_fill(argv, true, false);
    } else if (streq(argv[0], "dirty") && argc == 2) {
        cmd_dirty(argv);
    } else if (streq(argv[0], "disks") && argc == 1) {
        reply_num("disks ", g.nr_disks, false);
    } else if (streq(argv[0], "disk")) {
        cmd_disk(argc, argv);
    } else if (streq(argv[0], "reboot") && argc == 1) {
        reply("ok");
        sys(SYS_REBOOT, 0, 0, 0, 0);
    } else if (streq(argv[0], "help")) {
        reply("commands: tick, sum, fill SEED MB, sparse SEED MB, zero MB, dirty MBPS, disks, "
              "disk write D LBA SEED, disk read D LBA, reboot");
    } else if (streq(argv[0], "tick") || streq(argv[0], "sum") || streq(argv[0], "fill") ||
               streq(argv[0], "sparse") || streq(argv[0], "zero") || streq(argv[0], "dirty") ||
               streq(argv[0], "disks")) {
        reply2("error: wrong number of arguments for ", argv[0]);
    } else {
        reply2("error: unknown command ", argv[0]);
    }
}

/* Rewrite whole pages until we are level with rate * elapsed time. */
static bool dirty_step(void)
{
    uint64_t elapsed_ms = (g.jiffies - dirty_start) * g.base_ms;
    uint64_t target = elapsed_ms * dirty_rate * MiB / 1000;
    if (target > dirty_done + dirty_rate * MiB) {
        dirty_done = target - dirty_rate * MiB; /* do not chase more than 1 s of backlog */
    }
    if (dirty_done >= target) {
        return false;
    }
    for (int n = 0; n < 64 && dirty_done < target; n++) {
        if (dirty_pos + 4096 > g.data_bytes) {
            dirty_pos = 0;
            dirty_gen++;
        }
        uint64_t *w = data_word_ptr(dirty_pos);
        for (int i = 0; i < 512; i++) {
            w[i] = dirty_gen ^ (dirty_pos + (uint64_t)i * 8);
        }
        dirty_pos += 4096;
        dirty_done += 4096;
    }
    return true;
}

void user_main(void)
{
    char cmd[CMD_MAX];
    for (;;) {
        if (g.cmd_tail != g.cmd_head) {
            memcpy(cmd, g.cmds[g.cmd_tail % CMD_QUEUE], CMD_MAX);
            cmd[CMD_MAX - 1] = 0;
            barrier();
            g.cmd_tail++;
            run_command(cmd);
            continue;
        }
        if (dirty_rate && dirty_step()) {
            continue;
        }
        sys(SYS_WAIT, 0, 0, 0, 0);
    }
}
