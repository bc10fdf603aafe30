"""Randomized test of the qcow2 driver against an in-memory model.

Thousands of operations (writes of random sizes at random offsets, reads,
snapshot create/goto/delete, vmstate write/read/discard) run through the
real block layer on a real image (empty, made of compressed clusters, or
an overlay over a backing file); the model says what every read must
return.  The image is reopened now and then, and at the end qemu-img checks
it, reads the active disk, and applies snapshots itself to compare them.
"""
import os
import random
import shutil

import pytest

from test_block_lib import (Blocktool, blockdev_qcow2, crc, qemu_img, qemu_img_check,
                            read_raw_via_qemu)

MiB = 1 << 20
POOL = 4 * MiB

CASES = {
    # name: (qemu-img -o options, disk size, operations, seed, starting point)
    "512b-refcount16": ("cluster_size=512", 1 * MiB, 3000, 1, "empty"),
    "4k-refcount64": ("cluster_size=4096,refcount_bits=64", 2 * MiB, 3000, 2, "empty"),
    "64k-v2": ("compat=0.10", 4 * MiB, 2000, 3, "empty"),
    "4k-compressed-zstd": ("cluster_size=4096,compression_type=zstd", 2 * MiB, 1500, 4,
                           "compressed"),
    "4k-backing": ("cluster_size=4096", 2 * MiB, 1500, 5, "backing"),
}


def initial_image(tmp_path, img, opts, size, start, rng):
    """Make the image to start from; return its guest content."""
    if start == "empty":
        qemu_img("create", "-q", "-f", "qcow2", "-o", opts, img, str(size))
        return bytearray(size)
    # Compressible content: runs of random bytes.
    content = bytearray()
    while len(content) < size:
        content += bytes([rng.randrange(256)]) * rng.randrange(1, 5000)
    content = content[:size]
    src = tmp_path / "start.raw"
    src.write_bytes(content)
    if start == "compressed":
        qemu_img("convert", "-c", "-O", "qcow2", "-o", opts, str(src), img)
        assert ", 0.00% compressed" not in qemu_img("check", img).stdout
    else:
        base = str(tmp_path / "base.qcow2")
        qemu_img("convert", "-O", "qcow2", str(src), base)
        qemu_img("create", "-q", "-f", "qcow2", "-o", opts, "-b", base, "-F", "qcow2", img)
    return content


class Model:
    def __init__(self, disk):
        self.disk = bytearray(disk)
        self.vm = bytearray()
        self.snaps = {}  # name -> (disk, vmstate)


def run_ops(bt, m, rng, pool, n_ops, img, reopen):
    size = len(m.disk)
    counts = {}
    for i in range(n_ops):
        op = rng.choices(["write", "read", "vmw", "create", "goto", "delete", "vmread",
                          "discard"], [45, 15, 10, 8, 7, 7, 6, 2])[0]
        counts[op] = counts.get(op, 0) + 1
        if op == "write":
            ln = rng.choice([1, 511, 512, 4096, rng.randint(1, 70000), rng.randint(1, 300000)])
            ln = min(ln, size)
            off = rng.randrange(0, size - ln + 1)
            poff = rng.randrange(0, POOL - ln)
            bt.ok(f"write {off} {ln} {poff}")
            m.disk[off:off + ln] = pool[poff:poff + ln]
        elif op == "read":
            ln = rng.randint(1, size)
            off = rng.randrange(0, size - ln + 1)
            assert bt.crc(f"read {off} {ln}") == crc(m.disk[off:off + ln]), f"op {i}"
        elif op == "vmw":
            ln = rng.randint(1, 200000)
            pos = rng.randrange(0, 2 * MiB)
            poff = rng.randrange(0, POOL - ln)
            bt.ok(f"vm-write {pos} {ln} {poff}")
            if len(m.vm) < pos + ln:
                m.vm.extend(bytes(pos + ln - len(m.vm)))
            m.vm[pos:pos + ln] = pool[poff:poff + ln]
        elif op == "create" and len(m.snaps) < 8:
            name = f"r{i}"
            bt.ok(f"snap-create {name} {i * 1000}")
            m.snaps[name] = (bytes(m.disk), bytes(m.vm))
            m.vm = bytearray()
        elif op == "goto" and m.snaps:
            name = rng.choice(sorted(m.snaps))
            bt.ok(f"snap-goto {name}")
            m.disk[:] = m.snaps[name][0]  # the unsaved vmstate is not the disk: it stays
        elif op == "delete" and m.snaps:
            name = rng.choice(sorted(m.snaps))
            bt.ok(f"snap-delete {name}")
            del m.snaps[name]
        elif op == "vmread" and m.snaps:
            name = rng.choice(sorted(m.snaps))
            vm = m.snaps[name][1]
            if vm:
                ln = rng.randint(1, len(vm))
                pos = rng.randrange(0, len(vm) - ln + 1)
                assert bt.crc(f"snap-vmread {name} {pos} {ln}") == crc(vm[pos:pos + ln])
            if m.vm:
                ln = rng.randint(1, len(m.vm))
                assert bt.crc(f"vm-read 0 {ln}") == crc(m.vm[:ln])
        elif op == "discard":
            bt.ok("vm-discard")
            m.vm = bytearray()
        if reopen and i % 400 == 399:
            # Drop the unsaved vmstate (a real save would discard it on failure),
            # close, check with qemu-img, and reopen.
            bt.ok("vm-discard")
            m.vm = bytearray()
            bt = reopen(bt)
    # The mix really exercised every operation.
    assert all(counts.get(op, 0) > n_ops // 100 for op in
               ["write", "read", "vmw", "create", "goto", "delete", "vmread", "discard"]), counts
    return bt


@pytest.mark.parametrize("case", sorted(CASES))
def test_random_operations(tmp_path, case):
    opts, size, n_ops, seed, start = CASES[case]
    rng = random.Random(seed)
    pool = rng.randbytes(POOL)
    pool_path = tmp_path / "pool.bin"
    pool_path.write_bytes(pool)
    img = str(tmp_path / "r.qcow2")
    initial = initial_image(tmp_path, img, opts, size, start, rng)
    dev = blockdev_qcow2(img, extra="cache.no-flush=on")

    def reopen(bt):
        assert bt.close() == 0
        qemu_img_check(img)
        return Blocktool(dev, pool=str(pool_path))

    m = Model(initial)
    bt = Blocktool(dev, pool=str(pool_path))
    try:
        bt = run_ops(bt, m, rng, pool, n_ops, img, reopen)
        assert bt.crc(f"read 0 {size}") == crc(m.disk)
        bt.ok("vm-discard")
        listed = [line.split()[2][5:] for line in bt.cmd("snap-list")[0]]
        assert sorted(listed) == sorted(m.snaps)
    finally:
        assert bt.close() == 0
    qemu_img_check(img)
    assert read_raw_via_qemu(img, tmp_path) == m.disk
    # qemu-img itself applies (up to) two of the snapshots on copies.
    for name in sorted(m.snaps)[:2]:
        copy = str(tmp_path / "copy.qcow2")
        shutil.copy(img, copy)
        qemu_img("snapshot", "-a", name, copy)
        assert read_raw_via_qemu(copy, tmp_path) == m.snaps[name][0], name
        os.unlink(copy)
