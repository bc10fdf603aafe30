"""End to end: a real full filesystem (a few MiB of tmpfs; the tests run as
root), not an injected errno.  A savevm that runs out of space fails with
ENOSPC and leaves no trace; once space is back, saving works, and every
snapshot loads and verifies in a fresh snapvm."""
import os
import subprocess

import pytest

from fault_sweep import MEM, SECTORS, State, qemu_img_check
from snapshot_vm import Disk, Guest, qemu_img_snapshots

pytestmark = pytest.mark.kvm


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24M", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill_fs(mnt, leave):
    """Fill the filesystem but `leave` bytes; returns the filler path."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    path = mnt / "filler"
    with open(path, "wb") as f:
        f.write(b"\xa5" * max(0, free - leave))
    return path


def state(g, seed, mb):
    assert g.guest.cmd(f"fill {seed} {mb}") == "ok"
    for d, lba in SECTORS:
        assert g.guest.cmd(f"disk write {d} {lba} {seed * 100 + d}") == "ok"
    return State.read(g)


@pytest.mark.parametrize("room", [64 << 10, 1 << 20, 3 << 20, 6 << 20])
def test_savevm_on_a_full_filesystem(small_fs, room):
    """`room` bytes are left free: the save runs out at its first write, or
    part-way through the RAM section."""
    disks = [Disk("d0", "qcow2", "16M"), Disk("d1", "qcow2", "16M")]
    snaps = {}
    with Guest(small_fs, disks=disks, mem=MEM) as g:
        snaps["base"] = state(g, 1, 2)
        snaps["base"].tick = g.paused_tick()
        g.qmp.cmd("savevm", tag="base")
        g.qmp.cmd("cont")
        cur = state(g, 2, 8)  # 8 MiB of new RAM cannot fit
        filler = fill_fs(small_fs, room)
        with pytest.raises(Exception) as exc:
            g.qmp.cmd("savevm", tag="full")
        assert "No space left on device" in str(exc.value), exc.value
        assert [s["tag"] for s in g.qmp.cmd("query-snapshots")] == ["base"]
        assert g.qmp.cmd("query-status")["status"] == "running"
        g.next_tick()
        assert State.read(g).same_contents(cur)
        # Space is back: the same save works.
        filler.unlink()
        cur.tick = g.paused_tick()
        g.qmp.cmd("savevm", tag="again")
        snaps["again"] = cur
        g.qmp.cmd("cont")
    for d in disks:
        assert qemu_img_check(d.path(small_fs)) == (0, 0), d.name
        assert sorted(qemu_img_snapshots(d.path(small_fs))) == ["again", "base"]
    with Guest(small_fs, disks=disks, mem=MEM, name="verify") as g:
        for tag, st in snaps.items():
            g.next_tick()
            g.stop_for_load()
            g.qmp.cmd("loadvm", tag=tag)
            g.qmp.cmd("cont")
            assert g.next_tick() == st.tick + 1, tag
            assert State.read(g).same_contents(st), tag
