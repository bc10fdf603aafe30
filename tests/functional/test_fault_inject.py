"""The fault-injection tool itself (src/block/fault.c): the Nth matching host
I/O fails with the errno asked for, nothing else does, the counts are exact,
and a bad spec is refused.  The snapshot sweeps (test_fault_sweep.py) rely
on all of this."""
import json
import os

import pytest

from faultctl import FaultCtl, fault_env
from snapshot_vm import Disk, Guest, qemu_img_check, qemu_img_snapshots
from vm import VM, checksum_bytes, run_snapvm, sector_bytes

pytestmark = pytest.mark.kvm


def raw_disk(tmp_path, name="disk", size=4 << 20):
    path = tmp_path / f"{name}.raw"
    path.write_bytes(b"\0" * size)
    opts = f"driver=raw,node-name={name},file.driver=file,file.filename={path}"
    return path, ["-blockdev", opts, "-device", f"virtio-blk-pci,drive={name}"]


def read_sector(path, lba):
    with open(path, "rb") as f:
        f.seek(lba * 512)
        return f.read(512)


def test_nth_write_from_process_start_fails_once(tmp_path):
    img, args = raw_disk(tmp_path)
    counts = tmp_path / "counts.json"
    env = dict(os.environ, SNAPVM_FAULT="op=write,nth=2,errno=EIO,path=disk.raw",
               SNAPVM_FAULT_COUNT=str(counts))
    with VM(["-m", "64"] + args, env=env) as vm:
        vm.wait_ready()
        assert vm.cmd("disk write 0 1 11") == "ok"
        assert vm.cmd("disk write 0 2 22").startswith("error"), vm.lines[-3:]
        assert vm.cmd("disk write 0 3 33") == "ok"
        assert vm.cmd("disk read 0 1") == "disk %016x" % checksum_bytes(sector_bytes(11))
        assert vm.stop() == 0
    assert read_sector(img, 1) == sector_bytes(11)
    assert read_sector(img, 2) == b"\0" * 512  # the failed write did nothing
    assert read_sector(img, 3) == sector_bytes(33)
    c = json.loads(counts.read_text())
    assert c["write"] == 3 and c["matched"] == 3 and c["injected"] == 1, c
    assert c["files"][str(img)]["write"] == 3, c
    assert "write #2 (512 bytes at 1024)" in c["last-injected"], c
    assert "Input/output error" in c["last-injected"], c


def test_count_k_and_count_zero(tmp_path):
    img, args = raw_disk(tmp_path)
    env = fault_env(tmp_path)
    with VM(["-m", "64"] + args, env=env) as vm:
        vm.wait_ready()
        f = FaultCtl(env["SNAPVM_FAULT_CTL"])
        f.arm("op=write,nth=2,count=2,errno=ENOSPC")
        replies = [vm.cmd(f"disk write 0 {lba} {lba}") for lba in range(1, 6)]
        assert [r == "ok" for r in replies] == [True, False, False, True, True], replies
        assert f.counts()["injected"] == 2
        f.arm("op=write,nth=1,count=0,errno=EIO")  # re-arming restarts the match count
        replies = [vm.cmd(f"disk write 0 {lba} 7") for lba in range(6, 10)]
        assert not any(r == "ok" for r in replies), replies
        f.disarm()
        assert vm.cmd("disk write 0 10 10") == "ok"
        # Reads are counted but never matched by op=write.
        f.reset()
        assert vm.cmd("disk read 0 1") == "disk %016x" % checksum_bytes(sector_bytes(1))
        c = f.counts()
        assert c["read"] == 1 and c["write"] == 0 and not c["armed"], c
        f.close()
    assert [read_sector(img, lba) == sector_bytes(lba) for lba in range(1, 6)] == \
        [True, False, False, True, True]
    assert all(read_sector(img, lba) == b"\0" * 512 for lba in range(6, 10))


def test_path_filter_and_flush_fault_in_savevm(tmp_path):
    env = fault_env(tmp_path)
    disks = [Disk("d0"), Disk("d1")]
    with Guest(tmp_path, disks=disks, env=env) as g:
        f = FaultCtl(env["SNAPVM_FAULT_CTL"])
        f.reset()
        g.qmp.cmd("savevm", tag="a")
        c = f.counts()
        d0, d1 = (c["files"][d.path(tmp_path)] for d in disks)
        assert d0["write"] > 0 and d1["write"] > 0 and d0["flush"] > 0 and d1["flush"] > 0, c
        assert c["write"] == d0["write"] + d1["write"], c
        # Every flush of d1 fails: the savevm fails and says why.
        f.arm("op=flush,nth=1,count=0,errno=ENOSPC,path=d1.qcow2")
        with pytest.raises(Exception) as exc:
            g.qmp.cmd("savevm", tag="b")
        assert "No space left on device" in str(exc.value), exc.value
        c = f.counts()
        assert c["injected"] >= 1 and "d1.qcow2" in c["last-injected"], c
        f.disarm()
        f.close()
    assert set(qemu_img_snapshots(disks[0].path(tmp_path))) == {"a"}


def test_crash_action_kills_before_the_io(tmp_path):
    img, args = raw_disk(tmp_path)
    env = fault_env(tmp_path)
    with VM(["-m", "64"] + args, env=env) as vm:
        vm.wait_ready()
        f = FaultCtl(env["SNAPVM_FAULT_CTL"])
        f.arm("op=write,nth=2,action=crash,path=disk.raw")
        assert vm.cmd("disk write 0 1 11") == "ok"
        vm.write("disk write 0 2 22\n")
        assert vm.proc.wait(timeout=10) == 99  # _exit(99), like a kill -9
        f.close()
    assert read_sector(img, 1) == sector_bytes(11)  # earlier writes are in the file
    assert read_sector(img, 2) == b"\0" * 512      # the write it died at never happened


def test_bad_specs_are_refused(tmp_path):
    for spec, needle in [
        ("op=scribble,nth=1,errno=EIO", "op 'scribble'"),
        ("op=write,nth=0,errno=EIO", "nth '0'"),
        ("op=write,nth=1,errno=EWHAT", "errno 'EWHAT'"),
        ("op=write,nth=1", "needs op=, nth= and errno="),
        ("op=write,nth=1,action=explode", "action 'explode'"),
        ("op=write,nth=1,errno=EIO,colour=red", "unknown key 'colour'"),
    ]:
        r = run_snapvm(["-m", "64"], env=dict(os.environ, SNAPVM_FAULT=spec))
        assert r.returncode == 1, (spec, r)
        assert f"SNAPVM_FAULT: {needle}" in r.stderr, (spec, r.stderr)
    env = fault_env(tmp_path)
    with VM(["-m", "64"], env=env) as vm:
        vm.wait_ready()
        f = FaultCtl(env["SNAPVM_FAULT_CTL"])
        with pytest.raises(ValueError, match="op 'scribble'"):
            f.arm("op=scribble,nth=1,errno=EIO")
        with pytest.raises(ValueError, match="unknown command"):
            f._cmd("explode")
        assert not f.counts()["armed"]
        f.close()


def test_image_stays_clean_after_a_failed_guest_write(tmp_path):
    """A qcow2 data-cluster allocation whose write fails leaves no corruption."""
    env = fault_env(tmp_path)
    with Guest(tmp_path, disks=[Disk("d0")], env=env) as g:
        f = FaultCtl(env["SNAPVM_FAULT_CTL"])
        f.arm("op=write,nth=1,errno=EIO")
        assert g.guest.cmd("disk write 0 100 5").startswith("error")
        f.disarm()
        assert g.guest.cmd("disk write 0 100 6") == "ok"
        assert g.sector(0, 100) == "disk %016x" % checksum_bytes(sector_bytes(6))
        f.close()
    errors, _ = qemu_img_check(str(tmp_path / "d0.qcow2"))
    assert errors == 0
