"""Instant restore: guest RAM is mapped from the snapshot's clusters.  A
guest write never reaches the image, deleting the snapshot and reusing its
clusters never changes guest memory, and images whose clusters cannot be
mapped are read instead.  Zero stretches of RAM lie in the file as holes,
so RAM maps in a few long runs, and deleting the snapshot turns them into
fresh zero pages, not copies."""
import os
import re
import subprocess

import pytest

from snapshot_vm import Disk, Guest, qemu_img_check
from vm import DATA_START

pytestmark = pytest.mark.kvm


def test_guest_writes_never_reach_the_snapshot(tmp_path):
    disks = [Disk("disk0", "qcow2", "64M")]
    with Guest(tmp_path, disks=disks) as g:
        g.guest.cmd("fill 1 16")
        saved = g.guest.sum()
        g.qmp.cmd("savevm", tag="a")
        g.qmp.cmd("loadvm", tag="a")
        g.resync()
        g.guest.cmd("fill 2 16")  # writes pages mapped from the image
        assert g.guest.sum() != saved
        g.qmp.cmd("loadvm", tag="a")
        g.resync()
        assert g.guest.sum() == saved
    with Guest(tmp_path, disks=disks, extra=["-loadvm", "a"], wait_ready=False) as g:
        g.resync()
        assert g.guest.sum() == saved
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)


def test_deleting_and_reusing_mapped_clusters_keeps_guest_memory(tmp_path):
    disks = [Disk("disk0", "qcow2", "64M")]
    with Guest(tmp_path, disks=disks) as g:
        g.guest.cmd("fill 3 16")
        g.qmp.cmd("savevm", tag="a")
        g.guest.cmd("fill 4 16")
        g.qmp.cmd("loadvm", tag="a")
        g.resync()
        expect = g.guest.sum()
        g.qmp.cmd("delvm", tag="a")
        # New disk data lands in the clusters the snapshot freed (qcow2
        # reuses the lowest free clusters): one sector per 64 KiB cluster.
        for i in range(96):
            assert g.guest.cmd(f"disk write 0 {i * 128} {1000 + i}") == "ok"
        assert g.guest.sum() == expect
        g.qmp.cmd("savevm", tag="b")  # and a new vmstate over them too
        assert g.guest.sum() == expect
        assert g.guest.cmd("tick").startswith("tick ")
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)


def test_replacing_a_mapped_snapshot_keeps_guest_memory(tmp_path):
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "64M")]) as g:
        g.guest.cmd("fill 5 16")
        g.qmp.hmp("savevm r")
        g.qmp.hmp("loadvm r")
        g.resync()
        expect = g.guest.sum()
        assert g.qmp.hmp("savevm r") == ""  # deletes the mapped snapshot first
        for i in range(96):
            g.guest.cmd(f"disk write 0 {i * 128} {i}")
        assert g.guest.sum() == expect


@pytest.mark.parametrize("cluster", ["512", "2M"])
def test_unusual_cluster_sizes_load(tmp_path, cluster):
    """512-byte clusters cannot be mapped page by page: they are read."""
    img = tmp_path / "disk0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster}",
                    str(img), "64M"], check=True)
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "64M")]) as g:
        g.guest.cmd("fill 6 8")
        saved = g.guest.sum()
        g.qmp.cmd("savevm", tag="c")
        g.guest.cmd("fill 7 8")
        g.qmp.cmd("loadvm", tag="c")
        g.resync()
        assert g.guest.sum() == saved
    assert qemu_img_check(str(img)) == (0, 0)


def run_states(qmp):
    """The STOP/RESUME events received so far, in order."""
    return [e["event"] for e in qmp.events if e["event"] in ("STOP", "RESUME")]


def load_with(g, command):
    """loadvm 'a' while another client sends `command` as soon as the load is
    under way (status restore-vm, or the load already answered).  Returns
    what `command` answered."""
    g.qmp.clear_events()
    g.qmp.send({"execute": "loadvm", "arguments": {"tag": "a"}, "id": "load"})
    other = g.connect()
    for _ in range(2000):
        if other.cmd("query-status")["status"] == "restore-vm":
            break
    answer = other.execute(command)
    reply = g.qmp.recv(timeout=60)
    assert reply == {"return": {"tag": "a", "vmstate": "disk0", "devices": ["disk0"]},
                     "id": "load"}, reply
    other.close()
    return answer


@pytest.mark.parametrize("before", ["running", "paused"])
def test_stop_and_cont_during_a_load_are_honoured(tmp_path, before):
    """A stop or cont sent while a load runs is never lost: the VM ends in
    the state last asked for, with the events that say so.  (-mem-path RAM
    is read, not mapped: the load lasts long enough to be caught.)"""
    mem = tmp_path / "ram"
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "1G")], mem="512",
               extra=["-mem-path", str(mem)]) as g:
        g.guest.cmd("fill 3 400", timeout=60)
        g.qmp.cmd("savevm", tag="a")
        if before == "paused":
            g.qmp.cmd("stop")
        # stop on a running VM: it ends paused, the last event is STOP.
        # cont on a stopped VM: it runs afterwards, the last event is RESUME.
        command, want, last = (("stop", "paused", "STOP") if before == "running"
                               else ("cont", "running", "RESUME"))
        assert load_with(g, command).get("return") == {}
        status = g.qmp.cmd("query-status")
        assert status["status"] == want and status["running"] == (want == "running")
        assert run_states(g.qmp)[-1] == last, g.qmp.events
        if want == "paused":
            g.qmp.cmd("cont")
        g.resync()  # the guest runs on from the snapshot
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)


STRIDE = 512 << 10


def striped_ram(path, size):
    """Data in every other 512 KiB of the data region, zeros between."""
    chunk = os.urandom(STRIDE)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(DATA_START, size, 2 * STRIDE):
            f.seek(off)
            f.write(chunk)


def rss_anon_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024


def test_zero_stretches_map_in_few_runs_and_free_as_zero_pages(tmp_path):
    mem = 256
    ram = tmp_path / "vm.ram"
    striped_ram(ram, mem << 20)
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem=str(mem), extra=["-mem-path", str(ram)]) as g:
        saved = g.guest.sum()
        g.qmp.cmd("savevm", tag="a")
    env = {**os.environ, "SNAPVM_DEBUG": "1"}
    with Guest(tmp_path, disks=[disk], mem=str(mem), name="load", env=env,
               extra=["-loadvm", "a"], wait_ready=False) as g:
        g.resync()
        runs = [int(n) for n in re.findall(r"instant restore: (\d+) runs", g.guest.stderr())]
        # 127 stretches of data: one run each if the zeros between had no place in the file.
        assert runs and runs[-1] <= 4, runs
        assert g.guest.sum() == saved  # every page read: data and holes
        g.guest.cmd("fill 9 3")  # private copies, over data and zero stretches
        changed = g.guest.sum()
        g.qmp.cmd("delvm", tag="a")
        # The data was copied, the zero stretches became fresh zero pages:
        # not a copy of all of RAM.
        assert rss_anon_mib(g.guest.proc.pid) < mem * 0.5 + 48, rss_anon_mib(g.guest.proc.pid)
        g.qmp.cmd("savevm", tag="b")  # a new vmstate over a's freed clusters
        assert g.guest.sum() == changed
    assert qemu_img_check(disk.path(tmp_path)) == (0, 0)
