/*
 * The block layer's batch writer: many writes and hole punches to one host
 * file in flight at once (io_uring through liburing; plain pwrite/fallocate
 * where io_uring is unavailable), for the bulk data of a snapshot's vmstate.
 * Internal to src/block.
 *
 * Why a separate path from file.c's pwrite: a vmstate is hundreds of MiB to
 * GiB of page-sized pieces (non-zero pages between zero ones); one
 * synchronous system call at a time under the file node's lock leaves the
 * disk and the page cache idle between calls.  Every request still goes
 * through the fault-injection hook (fault_io) first, exactly as file.c's
 * system calls do, so fault sweeps see and can fail each of them.
 *
 * Usage: io_writer_init, any number of io_writer_write/io_writer_punch
 * (buffers must stay valid and unchanged in meaning until io_writer_drain
 * returns), io_writer_drain (waits for all; the first error), destroy.
 * Completion means the data is in the page cache, or for a direct write
 * with the disk (perhaps only in its volatile cache): not durable either
 * way.  The caller flushes the file (qcow2_barrier) before anything points
 * at it.
 *
 * Writes whose offset, length and buffer are page-aligned -- all of RAM --
 * go direct (O_DIRECT, always on the ring): the disk reads the pages from
 * guest memory itself.  Why: through the page cache every written page is
 * first a page-cache page to allocate, fill and later write back, which
 * here bounds a save at 230-330 MiB/s; direct, the same 1 GiB takes 0.6 s
 * (1650 MiB/s), and 4 KiB pieces between holes 1.2-1.6 s instead of 1.9-2.5
 * s.  The caller must not change such a buffer's pages before the drain
 * unless it will write them again (a live save's dirty log sees to that),
 * as the disk may read them at any moment until then.  A file that refuses
 * direct I/O (EINVAL: tmpfs, some FUSE) is written through the page cache.
 *
 * io_writer_writeback starts the write-out of a written range without
 * waiting for it (sync_file_range(SYNC_FILE_RANGE_WRITE) on the ring, run
 * by the kernel's io_uring workers): the disk then works while the caller
 * builds the next batch, and the flush at the commit point finds little
 * left.  It is a hint for speed only -- durability still comes from that
 * flush -- so drain does not wait for it; a writer may live across many
 * drains (one per node, see qcow2-vmstate.c), and destroy waits for all.
 */
#ifndef SNAPVM_BLOCK_WRITER_H
#define SNAPVM_BLOCK_WRITER_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

struct io_uring;

/* Enough 4 KiB direct writes in flight to keep a virtual disk busy. */
#define IO_WRITER_DEPTH 256

enum io_writer_kind {
    IO_WRITER_WRITE,
    IO_WRITER_PUNCH,
    IO_WRITER_WRITEBACK,
};

struct io_writer_req {
    uint64_t off;
    const uint8_t *buf; /* the data of a write */
    uint64_t len;
    enum io_writer_kind kind;
    bool direct; /* a write through dio_fd */
};

struct io_writer {
    int fd;                /* what requests write to: own_fd, else the node's */
    int own_fd;            /* a description of the file without locks (-1: none) */
    int dio_fd;            /* the same, O_DIRECT (-1: none, or the file refused it) */
    const char *path;      /* for errors and the fault hook */
    struct io_uring *ring; /* NULL: synchronous fallback */
    struct io_writer_req reqs[IO_WRITER_DEPTH];
    unsigned free_slots[IO_WRITER_DEPTH];
    unsigned nfree;
    unsigned inflight;       /* requests of every kind on the ring */
    unsigned inflight_hints; /* of them, writeback hints (drain does not wait) */
    int err;                 /* first errno seen since the last drain (0: none) */
    struct io_writer_req err_req;
    uint64_t bytes_written, holes_punched;
};

void io_writer_init(struct io_writer *w, int fd, const char *path);
void io_writer_write(struct io_writer *w, uint64_t off, const void *buf, uint64_t len);
void io_writer_punch(struct io_writer *w, uint64_t off, uint64_t len);
/* Start writing [off, off + len) out to the disk; does not wait. */
void io_writer_writeback(struct io_writer *w, uint64_t off, uint64_t len);
/* Wait for every write and punch; 0, or -1 with the first failure (of any
 * request since the last drain) in *errp, after which the writer is usable
 * again. */
int io_writer_drain(struct io_writer *w, struct error **errp);
/* Wait as drain does, but keep a failure for the next drain to report. */
void io_writer_wait(struct io_writer *w);
void io_writer_destroy(struct io_writer *w);

#endif
