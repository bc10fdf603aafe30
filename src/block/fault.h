/*
 * Fault injection for the block layer's host I/O: a test tool that makes
 * the Nth read, write, flush, truncate or allocate of an image file fail
 * with a chosen errno, so that tests can prove every snapshot operation
 * atomic under I/O errors.  Every host I/O of the block layer calls
 * fault_io() just before the system call (src/block/file.c today; any new
 * I/O path, such as an io_uring writer, must call it for each request it
 * submits and fail that request with the errno it returns).
 *
 * Off unless the environment asks for it; then the hook costs one load of
 * a global and a predictable branch.  Three controls (docs: the header
 * comment of fault.c and /work/team/bugs/interfaces.md):
 *
 *   SNAPVM_FAULT="op=write|read|flush|truncate|fallocate|any,nth=N,
 *                 errno=EIO|ENOSPC|...[,path=SUBSTR][,count=K]"
 *       armed from process start;
 *   SNAPVM_FAULT_COUNT=FILE
 *       the per-op counts (JSON) are written to FILE at exit;
 *   SNAPVM_FAULT_CTL=SOCKET
 *       a unix socket on which a test arms, disarms and reads the counts at
 *       a point in time (e.g. around one delvm), line by line.
 */
#ifndef SNAPVM_BLOCK_FAULT_H
#define SNAPVM_BLOCK_FAULT_H

#include <stddef.h>
#include <stdint.h>

enum fault_op {
    FAULT_READ,      /* pread */
    FAULT_WRITE,     /* pwrite (and any other data write: io_uring writes) */
    FAULT_FLUSH,     /* fdatasync, fsync */
    FAULT_TRUNCATE,  /* ftruncate */
    FAULT_FALLOCATE, /* fallocate (allocation, punch hole, zero range) */
    FAULT_OP_COUNT,
};

/* Non-zero when any control is set: the hook must take the slow path. */
extern int fault_active;

int fault_io_slow(enum fault_op op, const char *path, uint64_t offset, uint64_t len);

/*
 * Call just before the host I/O `op` on file `path` (offset/len for the
 * error message; 0 where they mean nothing).  Returns 0: do the I/O; or an
 * errno value: do not do it, fail as if the system call had returned -1
 * with that errno.
 */
static inline int fault_io(enum fault_op op, const char *path, uint64_t offset, uint64_t len)
{
    if (__builtin_expect(!__atomic_load_n(&fault_active, __ATOMIC_RELAXED), 1)) {
        return 0;
    }
    return fault_io_slow(op, path, offset, len);
}

#endif
