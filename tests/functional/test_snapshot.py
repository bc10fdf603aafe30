"""Whole-VM snapshots through QMP with the built-in guest: what a save holds,
what a load brings back, and that it survives the process and many cycles."""
import subprocess

import pytest

from qmp import QMPError
from snapshot_vm import Disk, Guest, qemu_img_check, qemu_img_snapshots
from vm import run_snapvm

pytestmark = pytest.mark.kvm


def two_disks():
    return [Disk("disk0", "qcow2", "64M"), Disk("disk1", "qcow2", "32M")]


def test_load_brings_back_ram_disk_and_tick(tmp_path):
    with Guest(tmp_path, disks=two_disks()) as g:
        assert g.guest.cmd("fill 11 16") == "ok"
        assert g.guest.cmd("disk write 0 7 1234") == "ok"
        assert g.guest.cmd("disk write 1 3 55") == "ok"
        ram, d0, d1 = g.guest.sum(), g.sector(0, 7), g.sector(1, 3)
        t = g.paused_tick()
        info = g.qmp.cmd("savevm", tag="t1")
        assert info["vmstate"] == "disk0" and info["vmstate-defaulted"] is True
        assert sorted(info["devices"]) == ["disk0", "disk1"]
        g.qmp.cmd("cont")
        g.guest.wait_for(rf"^tick {t + 3}$")
        assert g.guest.cmd("fill 99 16") == "ok"
        assert g.guest.cmd("disk write 0 7 1") == "ok"
        assert g.guest.cmd("disk write 1 3 2") == "ok"
        assert g.guest.sum() != ram
        g.stop_for_load()
        g.qmp.cmd("loadvm", tag="t1")
        g.qmp.cmd("cont")
        assert g.next_tick() == t + 1
        assert g.guest.sum() == ram
        assert g.sector(0, 7) == d0 and g.sector(1, 3) == d1
    for d in ("disk0", "disk1"):
        assert qemu_img_check(str(tmp_path / f"{d}.qcow2")) == (0, 0)


def test_load_while_running_keeps_running(tmp_path):
    with Guest(tmp_path, disks=two_disks()) as g:
        g.guest.cmd("fill 3 8")
        ram = g.guest.sum()
        g.qmp.cmd("savevm", tag="live")
        g.guest.cmd("fill 4 8")
        g.qmp.cmd("loadvm", tag="live")
        g.resync()
        assert g.qmp.cmd("query-status")["status"] == "running"
        assert g.guest.sum() == ram
        assert g.qmp.event("STOP") and g.qmp.event("RESUME")


def test_excluded_disk_keeps_current_content(tmp_path):
    with Guest(tmp_path, disks=two_disks()) as g:
        g.guest.cmd("disk write 0 1 10")
        g.guest.cmd("disk write 1 1 20")
        d0 = g.sector(0, 1)
        g.qmp.cmd("savevm", tag="x", exclude=["disk1"])
        g.guest.cmd("disk write 0 1 11")
        g.guest.cmd("disk write 1 1 21")
        d1_now = g.sector(1, 1)
        g.qmp.cmd("loadvm", tag="x", exclude=["disk1"])
        g.resync()
        assert g.sector(0, 1) == d0
        assert g.sector(1, 1) == d1_now
    assert list(qemu_img_snapshots(str(tmp_path / "disk1.qcow2"))) == []


def test_snapshot_survives_the_process(tmp_path):
    disks = two_disks()
    with Guest(tmp_path, disks=disks) as g:
        g.guest.cmd("fill 5 8")
        g.guest.cmd("disk write 1 9 77")
        ram, d1 = g.guest.sum(), g.sector(1, 9)
        t = g.paused_tick()
        g.qmp.cmd("savevm", tag="keep")
    # -loadvm: the fresh process starts from the snapshot.
    with Guest(tmp_path, disks=disks, extra=["-loadvm", "keep"], wait_ready=False) as g:
        assert g.next_tick() == t + 1
        assert g.guest.sum() == ram and g.sector(1, 9) == d1
    # loadvm into a freshly booted process.
    with Guest(tmp_path, disks=disks) as g:
        g.guest.cmd("fill 6 8")
        g.stop_for_load()
        g.qmp.cmd("loadvm", tag="keep")
        g.qmp.cmd("cont")
        assert g.next_tick() == t + 1
        assert g.guest.sum() == ram and g.sector(1, 9) == d1


def test_hundred_cycles_no_drift_no_leaks(tmp_path):
    disk = [Disk("disk0", "qcow2", "64M")]
    with Guest(tmp_path, disks=disk, extra=["-append", "tick_ms=10"]) as g:
        for i in range(100):
            g.guest.cmd(f"fill {i} 2")
            g.guest.cmd(f"disk write 0 {i} {i}")
            ram, sector = g.guest.sum(), g.sector(0, i)
            g.qmp.cmd("savevm", tag="cycle")
            g.guest.cmd(f"fill {i + 1000} 2")
            g.guest.cmd(f"disk write 0 {i} {i + 1000}")
            g.qmp.cmd("loadvm", tag="cycle")
            g.resync()
            assert g.guest.sum() == ram, f"cycle {i}"
            assert g.sector(0, i) == sector, f"cycle {i}"
            g.qmp.cmd("delvm", tag="cycle")
        g.qmp.cmd("savevm", tag="last")
    path = str(tmp_path / "disk0.qcow2")
    assert qemu_img_check(path) == (0, 0)
    assert list(qemu_img_snapshots(path)) == ["last"]


def test_qemu_img_lists_sizes_dates_clocks(tmp_path):
    with Guest(tmp_path, disks=two_disks()) as g:
        g.guest.cmd("fill 1 4")
        info = g.qmp.cmd("savevm", tag="sized")
        listed = g.qmp.cmd("query-snapshots")
    snaps0 = qemu_img_snapshots(str(tmp_path / "disk0.qcow2"))
    snaps1 = qemu_img_snapshots(str(tmp_path / "disk1.qcow2"))
    assert snaps0["sized"]["vm-state-size"] == info["vm-state-size"] > 64 << 20
    assert snaps1["sized"]["vm-state-size"] == 0
    entry = [s for s in listed if s["tag"] == "sized"][0]
    assert entry["loadable"] is True and entry["vmstate"] == "disk0"
    assert sorted(entry["nodes"]) == ["disk0", "disk1"]
    assert snaps0["sized"]["date-sec"] == entry["date-sec"]
    clock_ns = snaps0["sized"]["vm-clock-sec"] * 10**9 + snaps0["sized"]["vm-clock-nsec"]
    assert clock_ns == entry["vm-clock-nsec"] > 0
    out = subprocess.run(["qemu-img", "snapshot", "-l", str(tmp_path / "disk0.qcow2")],
                         capture_output=True, text=True, check=True).stdout
    assert "sized" in out


def test_block_nodes_list_snapshots(tmp_path):
    with Guest(tmp_path, disks=two_disks()) as g:
        g.qmp.cmd("savevm", tag="n1")
        nodes = {n["node-name"]: n for n in g.qmp.cmd("query-named-block-nodes")}
        names = [s["name"] for s in nodes["disk1"]["image"]["snapshots"]]
        assert names == ["n1"]


def test_hmp_savevm_loadvm_delvm_info(tmp_path):
    with Guest(tmp_path, disks=two_disks()) as g:
        g.guest.cmd("fill 1 4")
        ram = g.guest.sum()
        assert g.qmp.hmp("savevm h1") == ""
        g.guest.cmd("fill 2 4")
        assert g.qmp.hmp("savevm h1") == ""  # HMP replaces an existing tag
        ram2 = g.guest.sum()
        assert ram2 != ram
        g.guest.cmd("fill 3 4")
        assert g.qmp.hmp("loadvm h1") == ""
        g.resync()
        assert g.guest.sum() == ram2
        table = g.qmp.hmp("info snapshots")
        assert "h1" in table and "VM SIZE" in table
        assert g.qmp.hmp("savevm") == ""  # a tag from the date and time
        tags = [s["tag"] for s in g.qmp.cmd("query-snapshots")]
        assert len(tags) == 2 and any(t.startswith("vm-") for t in tags)
        assert g.qmp.hmp("delvm h1") == ""
        assert "Error" in g.qmp.hmp("loadvm h1")
        assert "Error" in g.qmp.hmp("loadvm")
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)


def test_loadvm_missing_tag_at_start_fails(tmp_path):
    disks = [Disk("disk0", "qcow2", "64M")]
    g = Guest(tmp_path, disks=disks)  # creates the image
    r = run_snapvm(g.args + ["-loadvm", "nope", "-serial", "null"])
    assert r.returncode == 1
    assert "-loadvm nope" in r.stderr and "'nope' does not exist on node 'disk0'" in r.stderr
