"""The hostile-image corpus (tests/hostile/make_corpus.py), each image with
its expected outcome: a clear error that names the culprit, the images
unchanged, the guest unchanged, and snapvm neither crashes nor hangs.

The cases whose correct handling is not on main yet are listed in PENDING
with their owner; they wait in /work/team/bugs/<owner>.md for the fix (the
corpus script makes them all, and `hostile_report()` below runs any of them
by name, so an owner can check a fix).  They are not run here at all: no
skip, no xfail."""
import os
import re
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "hostile"))
import make_corpus  # noqa: E402
from make_corpus import CASES, DATA_LBA, MEM, sha  # noqa: E402
from qmp import QMPError  # noqa: E402
from snapshot_vm import Disk, Guest  # noqa: E402
from fault_sweep import qemu_img_check  # noqa: E402
from qcow2img import Image  # noqa: E402
from vm import SNAPVM, checksum_bytes, sector_bytes  # noqa: E402

pytestmark = pytest.mark.kvm

BY_NAME = {c.name: c for c in CASES}
SEED = 5  # what the guest writes in 'write' cases: it must land nowhere in the file


def disks():
    return [Disk("d0", "qcow2", make_corpus.DISK_SIZE), Disk("d1", "qcow2", make_corpus.DISK_SIZE)]


def image_files(d):
    return [os.path.join(d, f"{n}.qcow2") for n in ("d0", "d1")]


def snapvm_args(d):
    args = ["-m", MEM]
    for disk in disks():
        args += disk.args(d)
    return args


def run_open(case, d):
    """snapvm must refuse to start: exit status 1, the culprit named, no hang."""
    try:
        r = subprocess.run([SNAPVM, *snapvm_args(d), "-serial", "none"], capture_output=True,
                           text=True, timeout=20, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "snapvm hung at start (killed after 20 s)"
    if r.returncode != 1:
        return f"snapvm exited with {r.returncode} (expected 1: refused): {r.stderr.strip()[-300:]}"
    if not re.search(case.expect, r.stderr):
        return f"the error does not match {case.expect!r}: {r.stderr.strip()[-300:]}"
    return None


class Relocated(Exception):
    """The guest write succeeded somewhere safe (see hostile())."""


def guest_io(case, d):
    """The guest reads or writes sector case.lba of d0: the I/O must fail, and
    snapvm's warning must name the culprit -- or, for a write, land somewhere
    safe and read back (raises Relocated; hostile() checks the metadata)."""
    with Guest(d, disks=disks(), mem=MEM) as g:
        if case.kind == "write":
            reply = g.guest.cmd(f"disk write 0 {case.lba} {SEED}")
        else:
            reply = g.guest.cmd(f"disk read 0 {case.lba}")
        g.guest.drain()
        if case.kind == "write" and reply == "ok":
            back = g.guest.cmd(f"disk read 0 {case.lba}")
            if back != "disk %016x" % checksum_bytes(sector_bytes(SEED)):
                return f"the guest write of sector {case.lba} succeeded but reads back {back}"
            raise Relocated()
        if reply.startswith("ok") or reply.startswith("disk "):
            return f"the guest {case.kind} of sector {case.lba} succeeded ({reply})"
        if not re.search(case.expect, g.guest.stderr()):
            return f"snapvm's error does not match {case.expect!r}: {g.guest.stderr()[-300:]}"
        # The VM goes on: another sector still works.
        if g.guest.cmd(f"disk read 1 {DATA_LBA}").startswith("error"):
            return "the other disk stopped working"
    return None


def run_loadvm(case, d):
    """loadvm 's' fails with the culprit named; the guest runs on unchanged."""
    with Guest(d, disks=disks(), mem=MEM) as g:
        assert g.guest.cmd("fill 2 2") == "ok"
        before = (g.guest.sum(), g.sector(0, DATA_LBA), g.sector(1, DATA_LBA))
        try:
            g.qmp.cmd("loadvm", tag="s")
            return "loadvm succeeded"
        except QMPError as e:
            desc = e.desc
        if not re.search(case.expect, desc):
            return f"the error does not match {case.expect!r}: {desc}"
        status = g.qmp.cmd("query-status")["status"]
        if status != "running":
            return f"the failed loadvm left the VM {status}: {desc}"
        g.resync()
        after = (g.guest.sum(), g.sector(0, DATA_LBA), g.sector(1, DATA_LBA))
        if after != before:
            return f"the failed loadvm changed the guest ({desc})"
    return None


class RefusedAtOpen(Exception):
    pass


def started(fn, case, d):
    """fn(case, d), where snapvm refusing the image at start is a result."""
    try:
        return fn(case, d)
    except AssertionError as e:
        if "snapvm did not start" not in str(e):
            raise
        if not case.or_open:
            return f"snapvm refused the image at start: {e}"
        if not re.search(case.expect, str(e)):
            return f"the error at start does not match {case.expect!r}: {e}"
        raise RefusedAtOpen(str(e))


def hostile(case, workdir, base):
    """Run one case; returns None if snapvm did the right thing, or what went wrong."""
    d = make_corpus.make_case(case, base, str(workdir))
    shas = {p: sha(p) for p in image_files(d)}
    sizes = {p: os.path.getsize(p) for p in image_files(d)}
    relocated = False
    if case.kind == "write":
        with Image(image_files(d)[0]) as im:
            fixed = im.fixed_metadata()
        errors_before = qemu_img_check(image_files(d)[0])[0]
    try:
        problem = None
        if case.kind == "loadvm":
            # Settle what a plain open does first, so that "unchanged" means the load.
            problem = started(lambda c, dd: Guest(dd, disks=disks(), mem=MEM).start().stop(),
                              case, d)
            shas = {p: sha(p) for p in image_files(d)}
        if problem:
            pass
        elif case.kind == "open":
            problem = run_open(case, d)
        elif case.kind in ("write", "read"):
            problem = started(guest_io, case, d)
        else:
            problem = started(run_loadvm, case, d)
    except RefusedAtOpen:
        problem = None
    except Relocated:
        # As QEMU's overlap check allows: the write went to a new cluster, or
        # to bytes of a metadata cluster that hold no metadata.  Then no
        # metadata byte may have changed, and qemu-img finds nothing new.
        problem, relocated = None, True
        with Image(image_files(d)[0]) as im:
            now = im.fixed_metadata()
        changed = [k for k in fixed if now.get(k) != fixed[k]]
        if changed:
            return f"the guest write changed metadata: {', '.join(changed)}"
        if qemu_img_check(image_files(d)[0])[0] > errors_before:
            return "the guest write added errors that qemu-img check reports"
    if problem:
        return problem
    for p in image_files(d):
        if os.path.getsize(p) > sizes[p] + (4 << 20):
            return f"{os.path.basename(p)} grew from {sizes[p]} to {os.path.getsize(p)} bytes"
        if case.kind == "write":
            if not relocated:
                with open(p, "rb") as f:
                    if sector_bytes(SEED) in f.read():
                        return f"the refused guest write landed in {os.path.basename(p)}"
        elif sha(p) != shas[p]:
            return f"{os.path.basename(p)} was changed"
    return None


# Cases whose correct handling is not on main yet, with the owner whose fix
# they wait for (the bug, with these names, is in /work/team/bugs/<owner>.md).
# Everything else in the corpus runs here.
PENDING = {}
LANDED = [c.name for c in CASES if c.name not in PENDING]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("hostile-base"))
    make_corpus.make_base(d)
    return d


@pytest.mark.parametrize("name", LANDED)
def test_hostile_image(name, base, tmp_path):
    problem = hostile(BY_NAME[name], tmp_path, base)
    assert problem is None, f"{name} ({BY_NAME[name].kind}): {problem}"


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len(set(BY_NAME)) == len(CASES)
    assert set(PENDING) <= set(BY_NAME)


def hostile_report(names=None):
    """Run cases by name (all by default); print one line each. For owners:
        /usr/bin/python3 -c 'import sys; sys.path[:0]=["tests/functional"];
            import test_fault_hostile as t; t.hostile_report(["backing-fifo"])'
    """
    import tempfile
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    with tempfile.TemporaryDirectory(prefix="snapvm-hostile-") as w:
        base_dir = os.path.join(w, "base")
        make_corpus.make_base(base_dir)
        bad = 0
        for c in CASES:
            if names and c.name not in names:
                continue
            try:
                p = hostile(c, w, base_dir)
            except Exception as e:  # a crash of the harness is a finding too
                p = f"harness error: {type(e).__name__}: {e}"
            bad += p is not None
            print(f"{'ok  ' if p is None else 'FAIL'} {c.kind:6} {c.name}: {p or ''}", flush=True)
        print(f"{bad} of {len(names or CASES)} cases not handled")
