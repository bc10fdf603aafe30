/*
 * blocktool: drives the real block layer (block.h) on real image files for
 * the functional tests.  It is a test harness, not a user tool.
 *
 *   blocktool [--pool FILE] --blockdev OPTS [--blockdev OPTS ...] [-c CMD ...]
 *
 * OPTS is the -blockdev dotted form or JSON.  The commands act on the last
 * node added.  Without -c, commands are read from stdin one per line, so a
 * test can run thousands of operations in one process (and hold the image
 * open, with its locks, until stdin closes).  Each command prints zero or
 * more data lines and then one line that starts with "ok" or "error: ".
 * Data written comes from the pool file (random bytes made by the test), so
 * the test can model the disk cheaply; reads print a CRC-32 of the data.
 *
 *   info                         ok driver=D length=N cluster=N
 *   read OFF LEN                 ok crc=XXXXXXXX
 *   write OFF LEN POOLOFF        write LEN pool bytes from POOLOFF at OFF
 *   fill OFF LEN BYTE
 *   dump FILE / load FILE OFF    guest disk to FILE / FILE into the disk at OFF
 *   flush
 *   add OPTS                     add another node and make it current
 *   snap-list                    "snap id=.. name=.. vmsize=.. date=.. vmclock=.. disksize=.."
 *   snap-create NAME [VMCLOCK_NS] [DATE_SEC]   vm_state_size = end of the vm-writes so far
 *   snap-goto NAME | snap-delete NAME
 *   vm-write POS LEN POOLOFF | vm-read POS LEN | vm-discard
 *   snap-vmread NAME POS LEN     ok crc=XXXXXXXX
 *   snap-vmmap NAME POS LEN      "extent POS LEN data|zero|unmappable HOSTOFF" lines
 *   use NODE                     make another node current
 *   txn-create NAME | txn-goto NAME | txn-delete NAME
 *                                prepare a transaction on the current node: "ok txn=K"
 *   txn-replace OLD_ID NAME      prepare a create that replaces snapshot OLD_ID
 *   txn-commit K | txn-abort K | txn-finish K
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "block/block.h"
#include "util/keyval.h"

struct tool {
    struct block_graph *graph;
    struct block_node *node;
    uint8_t *pool;
    size_t pool_len;
    uint64_t vm_end; /* end of the vmstate written since the last snapshot/discard */
    struct block_txn *txns[16];
    size_t n_txns;
};

/* The transaction commands (multi-node snapshot operations). */
static int cmd_txn(struct tool *t, const char *c, const char *arg, struct error **errp)
{
    if (!strncmp(c, "txn-create", 10) || !strcmp(c, "txn-goto") || !strcmp(c, "txn-delete")) {
        if (t->n_txns == 16) {
            error_setg(errp, "too many transactions");
            return -1;
        }
        struct block_txn *txn = NULL;
        int rc;
        if (!strcmp(c, "txn-create")) {
            struct block_snapshot_info info;
            memset(&info, 0, sizeof(info));
            if (strlen(arg) >= sizeof(info.name)) {
                error_setg(errp, "name too long for blocktool");
                return -1;
            }
            strcpy(info.name, arg);
            info.vm_state_size = t->vm_end;
            rc = block_snapshot_create_prepare(t->node, &info, &txn, errp);
        } else if (!strcmp(c, "txn-goto")) {
            rc = block_snapshot_goto_prepare(t->node, arg, &txn, errp);
        } else {
            rc = block_snapshot_delete_prepare(t->node, arg, &txn, errp);
        }
        if (rc < 0) {
            return -1;
        }
        t->txns[t->n_txns] = txn;
        printf("ok txn=%zu\n", t->n_txns++);
        return 0;
    }
    size_t k = strtoul(arg, NULL, 0);
    if (k >= t->n_txns || !t->txns[k]) {
        error_setg(errp, "no transaction %zu", k);
        return -1;
    }
    int rc = 0;
    if (!strcmp(c, "txn-commit")) {
        rc = block_snapshot_txn_commit(t->txns[k], errp);
    } else if (!strcmp(c, "txn-abort")) {
        rc = block_snapshot_txn_abort(t->txns[k], errp);
        t->txns[k] = NULL;
    } else {
        block_snapshot_txn_finish(t->txns[k]);
        t->txns[k] = NULL;
    }
    if (rc == 0) {
        printf("ok\n");
    }
    return rc;
}

static int add_node(struct tool *t, const char *opts_str, struct error **errp)
{
    json_t *opts = keyval_parse_any(opts_str, NULL, errp);
    if (!opts) {
        return -1;
    }
    struct block_node *node = block_graph_add(t->graph, opts, errp);
    json_decref(opts);
    if (!node) {
        return -1;
    }
    t->node = node;
    return 0;
}

static int load_pool(struct tool *t, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "blocktool: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    t->pool = malloc(n > 0 ? (size_t)n : 1);
    t->pool_len = fread(t->pool, 1, (size_t)n, f);
    fclose(f);
    return 0;
}

static uint8_t *pool_slice(struct tool *t, uint64_t off, uint64_t len, struct error **errp)
{
    if (!t->pool || off > t->pool_len || len > t->pool_len - off) {
        error_setg(errp, "pool range %" PRIu64 "+%" PRIu64 " is outside the pool file", off, len);
        return NULL;
    }
    return t->pool + off;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        abort();
    }
    return p;
}

static int print_crc(const void *buf, size_t len)
{
    printf("ok crc=%08lx\n", crc32(0, buf, (uInt)len));
    return 0;
}

static int cmd_read(struct tool *t, uint64_t off, uint64_t len, struct error **errp)
{
    uint8_t *buf = xmalloc(len);
    int rc = block_pread(t->node, off, buf, len, errp);
    if (rc == 0) {
        print_crc(buf, len);
    }
    free(buf);
    return rc;
}

static int cmd_dump(struct tool *t, const char *path, struct error **errp)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        error_setg_errno(errp, errno, "cannot create '%s'", path);
        return -1;
    }
    uint64_t size = block_node_length(t->node), chunk = 1 << 20;
    uint8_t *buf = xmalloc(chunk);
    int rc = 0;
    for (uint64_t off = 0; off < size && rc == 0; off += chunk) {
        uint64_t n = size - off < chunk ? size - off : chunk;
        rc = block_pread(t->node, off, buf, n, errp);
        if (rc == 0 && fwrite(buf, 1, n, f) != n) {
            error_setg(errp, "short write to '%s'", path);
            rc = -1;
        }
    }
    free(buf);
    fclose(f);
    if (rc == 0) {
        printf("ok\n");
    }
    return rc;
}

static int cmd_load(struct tool *t, const char *path, uint64_t off, struct error **errp)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        error_setg_errno(errp, errno, "cannot open '%s'", path);
        return -1;
    }
    uint8_t *buf = xmalloc(1 << 20);
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(buf, 1, 1 << 20, f)) > 0) {
        rc = block_pwrite(t->node, off, buf, n, errp);
        off += n;
    }
    free(buf);
    fclose(f);
    if (rc == 0) {
        printf("ok\n");
    }
    return rc;
}

static int cmd_snap_list(struct tool *t, struct error **errp)
{
    struct block_snapshot_info *list = NULL;
    size_t n = 0;
    if (block_snapshot_list(t->node, &list, &n, errp) < 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        printf("snap id=%s name=%s vmsize=%" PRIu64 " date=%" PRIu64 ".%09u vmclock=%" PRIu64
               " disksize=%" PRIu64 "\n",
               list[i].id, list[i].name, list[i].vm_state_size, list[i].date_sec, list[i].date_nsec,
               list[i].vm_clock_nsec, list[i].disk_size);
    }
    free(list);
    printf("ok %zu\n", n);
    return 0;
}

static int cmd_snap_create(struct tool *t, int argc, char **argv, struct error **errp)
{
    struct block_snapshot_info info;
    memset(&info, 0, sizeof(info));
    snprintf(info.name, sizeof(info.name), "%s", argv[1]);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    info.date_sec = (uint64_t)ts.tv_sec;
    info.date_nsec = (uint32_t)ts.tv_nsec;
    if (argc > 2) {
        info.vm_clock_nsec = strtoull(argv[2], NULL, 0);
    }
    if (argc > 3) {
        info.date_sec = strtoull(argv[3], NULL, 0);
        info.date_nsec = 0;
    }
    info.vm_state_size = t->vm_end;
    if (block_snapshot_create(t->node, &info, errp) < 0) {
        return -1;
    }
    t->vm_end = 0;
    printf("ok id=%s\n", info.id);
    return 0;
}

static const char *extent_kind(enum block_extent_kind k)
{
    switch (k) {
    case BLOCK_EXTENT_DATA:
        return "data";
    case BLOCK_EXTENT_ZERO:
        return "zero";
    default:
        return "unmappable";
    }
}

static int cmd_snap_vmmap(struct tool *t, const char *name, uint64_t pos, uint64_t len,
                          struct error **errp)
{
    struct block_extent *ext = NULL;
    size_t n = 0;
    if (block_snapshot_vmstate_map(t->node, name, pos, len, &ext, &n, errp) < 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        printf("extent %" PRIu64 " %" PRIu64 " %s %" PRIu64 "\n", ext[i].pos, ext[i].len,
               extent_kind(ext[i].kind), ext[i].host_offset);
    }
    free(ext);
    printf("ok %zu fd=%d\n", n, block_node_host_fd(t->node) >= 0);
    return 0;
}

static uint64_t num(const char *s)
{
    return strtoull(s, NULL, 0);
}

/* argv[0] is the command; returns 0 or -1 with *errp set. */
static int run_command(struct tool *t, int argc, char **argv, struct error **errp)
{
    const char *c = argv[0];
#define NEED(n)                                                                                    \
    do {                                                                                           \
        if (argc != (n) + 1) {                                                                     \
            error_setg(errp, "'%s' takes %d arguments", c, (n));                                   \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)
    if (!strcmp(c, "add")) {
        NEED(1);
        if (add_node(t, argv[1], errp) < 0) {
            return -1;
        }
        printf("ok\n");
        return 0;
    }
    if (!t->node) {
        error_setg(errp, "no node: give --blockdev");
        return -1;
    }
    if (!strcmp(c, "use")) {
        NEED(1);
        struct block_node *n = block_graph_find(t->graph, argv[1]);
        if (!n) {
            error_setg(errp, "no node '%s'", argv[1]);
            return -1;
        }
        t->node = n;
        printf("ok\n");
        return 0;
    }
    if (!strcmp(c, "txn-replace")) {
        NEED(2);
        struct block_snapshot_info info;
        struct block_txn *txn = NULL;
        memset(&info, 0, sizeof(info));
        if (strlen(argv[2]) >= sizeof(info.name) || t->n_txns == 16) {
            error_setg(errp, "name too long or too many transactions");
            return -1;
        }
        strcpy(info.name, argv[2]);
        info.vm_state_size = t->vm_end;
        if (block_snapshot_replace_prepare(t->node, argv[1], &info, &txn, errp) < 0) {
            return -1;
        }
        t->txns[t->n_txns] = txn;
        printf("ok txn=%zu\n", t->n_txns++);
        return 0;
    }
    if (!strncmp(c, "txn-", 4)) {
        NEED(1);
        return cmd_txn(t, c, argv[1], errp);
    }
    if (!strcmp(c, "info")) {
        printf("ok driver=%s length=%" PRIu64 " cluster=%u\n", block_node_driver(t->node),
               block_node_length(t->node), block_node_cluster_size(t->node));
        return 0;
    }
    if (!strcmp(c, "read")) {
        NEED(2);
        return cmd_read(t, num(argv[1]), num(argv[2]), errp);
    }
    if (!strcmp(c, "write") || !strcmp(c, "vm-write")) {
        NEED(3);
        uint8_t *src = pool_slice(t, num(argv[3]), num(argv[2]), errp);
        if (!src) {
            return -1;
        }
        int rc = !strcmp(c, "write")
                         ? block_pwrite(t->node, num(argv[1]), src, num(argv[2]), errp)
                         : block_vmstate_write(t->node, num(argv[1]), src, num(argv[2]), errp);
        if (rc == 0 && !strcmp(c, "vm-write") && num(argv[1]) + num(argv[2]) > t->vm_end) {
            t->vm_end = num(argv[1]) + num(argv[2]);
        }
        if (rc == 0) {
            printf("ok\n");
        }
        return rc;
    }
    if (!strcmp(c, "fill")) {
        NEED(3);
        uint64_t len = num(argv[2]);
        uint8_t *buf = xmalloc(len);
        memset(buf, (int)num(argv[3]), len);
        int rc = block_pwrite(t->node, num(argv[1]), buf, len, errp);
        free(buf);
        if (rc == 0) {
            printf("ok\n");
        }
        return rc;
    }
    if (!strcmp(c, "dump")) {
        NEED(1);
        return cmd_dump(t, argv[1], errp);
    }
    if (!strcmp(c, "load")) {
        NEED(2);
        return cmd_load(t, argv[1], num(argv[2]), errp);
    }
    if (!strcmp(c, "flush")) {
        if (block_flush(t->node, errp) < 0) {
            return -1;
        }
        printf("ok\n");
        return 0;
    }
    if (!strcmp(c, "snap-list")) {
        return cmd_snap_list(t, errp);
    }
    if (!strcmp(c, "snap-create")) {
        if (argc < 2 || argc > 4) {
            error_setg(errp, "usage: snap-create NAME [VMCLOCK_NS] [DATE_SEC]");
            return -1;
        }
        return cmd_snap_create(t, argc, argv, errp);
    }
    if (!strcmp(c, "snap-goto") || !strcmp(c, "snap-delete")) {
        NEED(1);
        /* A goto keeps an unsaved vmstate (block.h): vm_end stays. */
        int rc = !strcmp(c, "snap-goto") ? block_snapshot_goto(t->node, argv[1], errp)
                                         : block_snapshot_delete(t->node, argv[1], errp);
        if (rc == 0) {
            printf("ok\n");
        }
        return rc;
    }
    if (!strcmp(c, "vm-read")) {
        NEED(2);
        uint64_t len = num(argv[2]);
        uint8_t *buf = xmalloc(len);
        int rc = block_vmstate_read(t->node, num(argv[1]), buf, len, errp);
        if (rc == 0) {
            print_crc(buf, len);
        }
        free(buf);
        return rc;
    }
    if (!strcmp(c, "vm-discard")) {
        if (block_vmstate_discard(t->node, errp) < 0) {
            return -1;
        }
        t->vm_end = 0;
        printf("ok\n");
        return 0;
    }
    if (!strcmp(c, "snap-vmread")) {
        NEED(3);
        uint64_t len = num(argv[3]);
        uint8_t *buf = xmalloc(len);
        int rc = block_snapshot_vmstate_read(t->node, argv[1], num(argv[2]), buf, len, errp);
        if (rc == 0) {
            print_crc(buf, len);
        }
        free(buf);
        return rc;
    }
    if (!strcmp(c, "snap-vmmap")) {
        NEED(3);
        return cmd_snap_vmmap(t, argv[1], num(argv[2]), num(argv[3]), errp);
    }
    error_setg(errp, "unknown command '%s'", c);
    return -1;
#undef NEED
}

/* Split a line on whitespace (the add command's OPTS must not contain spaces). */
static int split(char *line, char **argv, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\r\n", &save); tok && n < max;
         tok = strtok_r(NULL, " \t\r\n", &save)) {
        argv[n++] = tok;
    }
    return n;
}

static int run_line(struct tool *t, char *line)
{
    char *argv[16];
    int argc = split(line, argv, 16);
    if (argc == 0) {
        return 0;
    }
    struct error *err = NULL;
    if (run_command(t, argc, argv, &err) < 0) {
        printf("error: %s\n", err ? err->message : "unknown failure");
        error_free(err);
        fflush(stdout);
        return -1;
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    struct tool t = {.graph = block_graph_new()};
    int failed = 0, ncmds = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--pool") && i + 1 < argc) {
            if (load_pool(&t, argv[++i]) < 0) {
                return 2;
            }
        } else if (!strcmp(argv[i], "--blockdev") && i + 1 < argc) {
            struct error *err = NULL;
            if (add_node(&t, argv[++i], &err) < 0) {
                fprintf(stderr, "blocktool: %s\n", err->message);
                printf("error: %s\n", err->message);
                error_free(err);
                block_graph_free(t.graph);
                return 1;
            }
        } else if (!strcmp(argv[i], "-c") && i + 1 < argc) {
            char *line = strdup(argv[++i]);
            failed |= run_line(&t, line) < 0;
            free(line);
            ncmds++;
        } else {
            fprintf(stderr, "usage: blocktool [--pool FILE] --blockdev OPTS... [-c CMD]...\n");
            return 2;
        }
    }
    if (ncmds == 0) {
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, stdin) > 0) {
            failed |= run_line(&t, line) < 0;
        }
        free(line);
    }
    /* Transactions left open are undone, as snapvm's callers must. */
    for (size_t k = 0; k < t.n_txns; k++) {
        block_snapshot_txn_abort(t.txns[k], NULL);
    }
    block_graph_free(t.graph);
    free(t.pool);
    return failed ? 1 : 0;
}
