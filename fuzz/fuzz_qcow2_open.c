/*
 * libFuzzer target over the qcow2 open path and everything an image's
 * metadata steers: header, extensions, L1/L2, refcounts, snapshot table,
 * compressed clusters.  The input is the image file itself (in a memfd);
 * after a successful open the target reads, lists and reads snapshots, and
 * writes / snapshots / reverts, so metadata updates on hostile images are
 * fuzzed too.  Build: see fuzz/meson.build.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/block.h"

#define READ_MAX (1u << 20)

static void exercise(struct block_node *n)
{
    static uint8_t buf[READ_MAX];
    uint64_t len = block_node_length(n);
    /* A hostile size is fine; read a bounded window at the start and end. */
    uint64_t win = len < READ_MAX ? len : READ_MAX;
    block_pread(n, 0, buf, win, NULL);
    block_pread(n, len - win, buf, win, NULL);
    struct block_snapshot_info *list = NULL;
    size_t count = 0;
    if (block_snapshot_list(n, &list, &count, NULL) == 0) {
        for (size_t i = 0; i < count && i < 4; i++) {
            uint64_t vm = list[i].vm_state_size < 65536 ? list[i].vm_state_size : 65536;
            block_snapshot_vmstate_read(n, list[i].id, 0, buf, vm, NULL);
            struct block_extent *ext = NULL;
            size_t next = 0;
            block_snapshot_vmstate_map(n, list[i].id, 0, vm, &ext, &next, NULL);
            free(ext);
        }
    }
    memset(buf, 0xa5, 70000);
    if (len >= 70000) {
        block_pwrite(n, len / 3, buf, 70000, NULL);
    }
    block_vmstate_write(n, 100, buf, 5000, NULL);
    struct block_snapshot_info info;
    memset(&info, 0, sizeof(info));
    strcpy(info.name, "fuzz");
    info.vm_state_size = 5100;
    if (block_snapshot_create(n, &info, NULL) == 0) {
        block_pwrite(n, 0, buf, len < 512 ? len : 512, NULL);
        block_snapshot_goto(n, "fuzz", NULL);
    }
    if (count > 0) {
        block_snapshot_delete(n, list[0].id, NULL);
    }
    free(list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz.qcow2", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
        abort();
    }
    char opts[256];
    snprintf(opts, sizeof(opts),
             "{\"driver\": \"qcow2\", \"node-name\": \"f\", \"backing\": null, \"file\": "
             "{\"driver\": \"file\", \"filename\": \"/proc/self/fd/%d\", \"locking\": "
             "\"off\"}, \"cache\": {\"no-flush\": true}}",
             fd);
    json_t *o = json_loads(opts, 0, NULL);
    struct block_graph *g = block_graph_new();
    struct block_node *n = block_graph_add(g, o, NULL);
    if (n) {
        exercise(n);
    }
    block_graph_free(g);
    json_decref(o);
    close(fd);
    return 0;
}
