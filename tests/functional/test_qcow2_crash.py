"""Crash consistency: snapvm's block layer is killed between any two of its
writes (an LD_PRELOAD shim counts pwrite calls and _exit()s, like kill -9)
during snapshot create/goto/delete, COW writes and vmstate handling.  After
every crash point the image must hold the state before or after the
operation in progress, and `qemu-img check` may find leaked clusters and
nothing else -- except stale COPIED flags while a snapshot is being created:
raising refcounts and clearing those hint flags of the active tree are
separate writes (QEMU has the same window).  The flags never lead snapvm
astray (it decides copy-on-write from the refcount itself), and its next
snapshot operation sets them right, which the test checks too."""
import os
import random
import shutil
import subprocess

import pytest

from test_block_lib import BLOCKTOOL, Blocktool, blockdev_qcow2, qemu_img

SHIM = os.path.join(os.path.dirname(BLOCKTOOL), "crashshim.so")
# Crash after every STRIDE-th write (default: every one of about 150 writes, ~4 s).
STRIDE = int(os.environ.get("SNAPVM_CRASH_STRIDE", "1"))
MiB = 1 << 20

OPS = [
    "write 0 70000 100",         # COW of clusters shared with snapshots
    "vm-write 0 30000 5000",
    "snap-create new 777",       # with vmstate
    "snap-delete s1",
    "snap-goto s2",
    "write 500000 20000 9000",   # allocating write
    "vm-write 0 9000 1",
    "vm-discard",
    "snap-delete new",
]


def prepare(tmp_path):
    pool = tmp_path / "pool.bin"
    pool.write_bytes(random.Random(9).randbytes(MiB))
    img = str(tmp_path / "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, str(MiB))
    with Blocktool(blockdev_qcow2(img), pool=str(pool)) as bt:
        bt.ok("write 0 300000 0")
        bt.ok("vm-write 0 20000 7")
        bt.ok("snap-create s1")
        bt.ok("write 100000 200000 3000")
        bt.ok("snap-create s2")
    return img, str(pool)


def state(bt):
    crc = bt.crc(f"read 0 {MiB}")
    names = tuple(sorted(line.split()[2] for line in bt.cmd("snap-list")[0]))
    return crc, names


def run_crashing(img, pool, n):
    env = dict(os.environ, LD_PRELOAD=SHIM, CRASH_AFTER_WRITES=str(n))
    r = subprocess.run([BLOCKTOOL, "--pool", pool, "--blockdev", blockdev_qcow2(img)],
                       input="\n".join(OPS) + "\n", capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode in (0, 99), r.stdout + r.stderr
    return r.returncode == 99


def check_after_crash(img):
    r = qemu_img("check", img, check=False)
    errors = [l for l in r.stdout.splitlines() + r.stderr.splitlines() if l.startswith("ERROR")]
    bad = [l for l in errors if "OFLAG_COPIED" not in l]
    assert not bad, r.stdout + r.stderr
    return r


def shim_works(img):
    """Can the shim be preloaded?  A sanitizer build of blocktool refuses to
    start with another library ahead of its runtime."""
    env = dict(os.environ, LD_PRELOAD=SHIM)
    r = subprocess.run([BLOCKTOOL, "--blockdev",
                        blockdev_qcow2(img, extra="read-only=on,force-share=on"), "-c", "info"],
                       capture_output=True, text=True, env=env, timeout=60)
    return r.returncode == 0


def test_crash_at_every_write(tmp_path):
    assert os.path.exists(SHIM)
    base, pool = prepare(tmp_path)
    if "SNAPVM_BLOCKTOOL" in os.environ and not shim_works(base):
        pytest.skip("the crash shim cannot be preloaded into this blocktool (sanitizer build)")
    # The states at operation boundaries, from an uninterrupted run.
    ref = str(tmp_path / "ref.qcow2")
    shutil.copy(base, ref)
    boundaries = set()
    with Blocktool(blockdev_qcow2(ref), pool=pool) as bt:
        boundaries.add(state(bt))
        for op in OPS:
            bt.ok(op)
            boundaries.add(state(bt))
    img = str(tmp_path / "crash.qcow2")
    n = points = 0
    crashed = True
    while crashed:
        shutil.copy(base, img)
        crashed = run_crashing(img, pool, n)
        check_after_crash(img)
        with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
            st = state(bt)
            assert st in boundaries, f"crash after {n} writes left a state no operation produced"
            # The image stays usable: more writes and snapshots work.
            bt.ok("write 1000 8000 0")
            bt.ok("snap-create after-crash")
        r = check_after_crash(img)
        # snapvm's next snapshot operation has set every COPIED flag right;
        # leaks (exit status 3) are all a crash may leave behind.
        assert r.returncode in (0, 3) and "ERROR" not in r.stdout + r.stderr, r.stdout
        n += STRIDE
        points += 1
        assert n < 5000
    assert points > 30  # the sequence really was cut at many points


POWERLOSS = os.path.join(os.path.dirname(BLOCKTOOL), "powerloss.so")


def test_power_loss_at_every_write(tmp_path):
    """A power cut between any two writes: every sector written since the
    last flush independently survives or not (tests/block/powerloss.c).
    This checks that each flush sits where the ordering needs it: the image
    must stay consistent (leaks at most; COPIED hints as above)."""
    assert os.path.exists(POWERLOSS)
    base, pool = prepare(tmp_path)
    if "SNAPVM_BLOCKTOOL" in os.environ and not shim_works(base):
        pytest.skip("the shim cannot be preloaded into this blocktool (sanitizer build)")
    img = str(tmp_path / "cut.qcow2")
    n = points = 0
    while True:
        shutil.copy(base, img)
        env = dict(os.environ, LD_PRELOAD=POWERLOSS, CRASH_AFTER_WRITES=str(n),
                   CRASH_SEED=str(n * 7919 + 1))
        r = subprocess.run([BLOCKTOOL, "--pool", pool, "--blockdev", blockdev_qcow2(img)],
                           input="\n".join(OPS) + "\n", capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode in (0, 99), r.stdout + r.stderr
        check_after_crash(img)
        with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
            state(bt)
            bt.ok("write 1000 8000 0")
            bt.ok("snap-create after-cut")
        r2 = check_after_crash(img)
        assert r2.returncode in (0, 3) and "ERROR" not in r2.stdout + r2.stderr, r2.stdout
        if r.returncode == 0:
            break
        n += STRIDE
        points += 1
        assert n < 5000
    assert points > 30
