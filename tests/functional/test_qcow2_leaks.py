"""Leaked clusters are reclaimed by the next writable open: a snapvm killed
with SIGKILL in the middle of a save leaves the vmstate written so far
allocated but unreferenced (hundreds of MiB); qemu-img check then reports
leaks, no errors, and after one clean open + quit it reports nothing."""
import re
import time

import pytest

from snapshot_vm import Disk, Guest, qemu_img_check, qemu_img_snapshots
from test_block_lib import Blocktool, blockdev_qcow2, qemu_img

pytestmark = pytest.mark.kvm


def test_kill_during_save_then_clean_open_reclaims(tmp_path):
    disk = Disk("disk0", "qcow2", "64M")
    img = str(tmp_path / "disk0.qcow2")
    g = Guest(tmp_path, disks=[disk], mem="512").start()
    try:
        g.guest.cmd("fill 7 16")
        g.guest.cmd("disk write 0 5 77")
        ram, sector = g.guest.sum(), g.sector(0, 5)
        g.qmp.cmd("savevm", tag="keep")
        # No base left (it was deleted): the save below is a full one, whose
        # new clusters an L2 entry names only at its flush points.  (An
        # incremental one links each batch as it goes: a kill leaks one.)
        g.qmp.cmd("savevm", tag="tmp")
        g.qmp.cmd("delvm", tag="tmp")
        g.guest.cmd("fill 8 440", timeout=60)
        g.qmp.cmd("snapshot-save", job_id="s", tag="killed", vmstate="disk0", devices=["disk0"])
        deadline = time.monotonic() + 30
        while True:  # kill once a good part of the RAM is written
            jobs = g.qmp.cmd("query-jobs")
            if jobs and jobs[0].get("current-progress", 0) > 200 << 20:
                break
            assert jobs and jobs[0]["status"] == "running" and time.monotonic() < deadline, jobs
            time.sleep(0.005)
        g.guest.kill()
    finally:
        g.guest.kill()
    errors, leaks = qemu_img_check(img)
    assert errors == 0
    assert leaks > 1000, f"only {leaks} clusters leaked: the kill came too late"
    assert sorted(qemu_img_snapshots(img)) == ["keep"]
    leaked_mib = leaks * 65536 >> 20
    print(f"kill -9 during save: {leaks} clusters ({leaked_mib} MiB) leaked")
    # A clean open and quit of snapvm reclaims them all.
    g = Guest(tmp_path, disks=[disk], mem="512").start()
    g.stop()
    # (qemu-img counts the leaks inside the file; clusters counted past its end
    # by an allocation the kill cut short are reclaimed too)
    m = re.search(rf"'{re.escape(img)}': reclaimed (\d+) leaked clusters", g.guest.stderr())
    assert m and int(m.group(1)) >= leaks, g.guest.stderr()
    assert qemu_img_check(img) == (0, 0)
    # The earlier snapshot is intact.
    with Guest(tmp_path, disks=[disk], mem="512") as g:
        g.qmp.cmd("loadvm", tag="keep")
        g.resync()
        assert g.guest.sum() == ram
        assert g.sector(0, 5) == sector
    assert qemu_img_check(img) == (0, 0)


def test_leaks_from_blocktool_kill_are_reclaimed(tmp_path):
    img = str(tmp_path / "v.qcow2")
    pool = tmp_path / "pool"
    pool.write_bytes(bytes(range(256)) * 4096)
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "1M")
    bt = Blocktool(blockdev_qcow2(img), pool=str(pool))
    for i in range(200):
        bt.ok(f"vm-write {i * 8192} 4096 {i * 4096}")
    bt.proc.kill()
    bt.proc.wait()
    assert qemu_img_check(img) == (0, 200)
    with Blocktool(blockdev_qcow2(img)) as bt:
        bt.ok("info")
    assert qemu_img_check(img) == (0, 0)
    # A read-only open changes nothing.
    bt = Blocktool(blockdev_qcow2(img, extra="read-only=on"))
    bt.ok("info")
    bt.close()
