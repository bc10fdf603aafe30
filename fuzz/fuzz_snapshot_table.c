/*
 * libFuzzer target over the qcow2 snapshot table: a valid image (made once
 * by qemu-img, with one snapshot that qemu-img wrote) whose snapshot table
 * is replaced by the input.  The first two input bytes give nb_snapshots
 * (0..255) and where the table goes (at the end of the file, or over the
 * original table), the rest is the table.  After a successful open the
 * target lists the snapshots, reads and maps each one's vmstate, and goes
 * to and deletes them, so that every field an entry carries (L1 offset and
 * size, id and name lengths, extra data, vm_state_size, disk size) steers
 * real code.  fuzz_qcow2_open mutates the whole image; this target keeps
 * the rest valid, so the table parser is reached on every input.
 * Build and run: see fuzz/meson.build (needs qemu-img at start).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *base;
static size_t base_len;
static uint64_t base_table; /* snapshots_offset of the qemu-img image */

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void setup(void)
{
    char dir[] = "/tmp/fuzz-snaptable-XXXXXX";
    if (!mkdtemp(dir)) {
        abort();
    }
    char cmd[512], path[128];
    snprintf(path, sizeof(path), "%s/base.qcow2", dir);
    snprintf(cmd, sizeof(cmd),
             "qemu-img create -q -f qcow2 -o cluster_size=4096 %s 1M && "
             "qemu-io -c 'write -P 7 0 64k' %s >/dev/null && qemu-img snapshot -c s1 %s",
             path, path, path);
    if (system(cmd) != 0) {
        fprintf(stderr, "fuzz_snapshot_table: qemu-img failed: %s\n", cmd);
        abort();
    }
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || stat(path, &st) < 0) {
        abort();
    }
    base_len = (size_t)st.st_size;
    base = malloc(base_len);
    if (!base || fread(base, 1, base_len, f) != base_len) {
        abort();
    }
    fclose(f);
    unlink(path);
    rmdir(dir);
    base_table = be64(base + 64);
}

static void exercise(struct block_node *n)
{
    static uint8_t buf[65536];
    struct block_snapshot_info *list = NULL;
    size_t count = 0;
    if (block_snapshot_list(n, &list, &count, NULL) < 0) {
        return;
    }
    for (size_t i = 0; i < count && i < 8; i++) {
        uint64_t vm = list[i].vm_state_size < sizeof(buf) ? list[i].vm_state_size : sizeof(buf);
        block_snapshot_vmstate_read(n, list[i].id, 0, buf, vm, NULL);
        struct block_extent *ext = NULL;
        size_t next = 0;
        block_snapshot_vmstate_map(n, list[i].id, 0, vm, &ext, &next, NULL);
        free(ext);
        block_pread(n, 0, buf, 4096, NULL);
    }
    if (count > 0) {
        block_snapshot_goto(n, list[0].id, NULL);
        block_pread(n, 0, buf, 4096, NULL);
        block_snapshot_delete(n, list[count - 1].id, NULL);
    }
    free(list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base) {
        setup();
    }
    if (size < 2) {
        return 0;
    }
    uint32_t nb = data[0];
    bool at_end = data[1] & 1;
    const uint8_t *table = data + 2;
    size_t tlen = size - 2;
    int fd = memfd_create("fuzz-snaptable.qcow2", 0);
    if (fd < 0 || write(fd, base, base_len) != (ssize_t)base_len) {
        abort();
    }
    uint64_t off = at_end ? (base_len + 4095) / 4096 * 4096 : base_table;
    if (pwrite(fd, table, tlen, (off_t)off) != (ssize_t)tlen) {
        abort();
    }
    uint8_t hdr[12];
    put_be(hdr, nb, 4);
    put_be(hdr + 4, off, 8);
    if (pwrite(fd, hdr, sizeof(hdr), 60) != (ssize_t)sizeof(hdr)) { /* nb_snapshots, offset */
        abort();
    }
    char opts[256];
    snprintf(opts, sizeof(opts),
             "{\"driver\": \"qcow2\", \"node-name\": \"f\", \"file\": {\"driver\": \"file\", "
             "\"filename\": \"/proc/self/fd/%d\", \"locking\": \"off\"}, \"cache\": "
             "{\"no-flush\": true}}",
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
