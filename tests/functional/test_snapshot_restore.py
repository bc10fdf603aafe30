"""Instant restore: guest RAM is mapped from the snapshot's clusters.  A
guest write never reaches the image, deleting the snapshot and reusing its
clusters never changes guest memory, and images whose clusters cannot be
mapped are read instead."""
import subprocess

import pytest

from snapshot_vm import Disk, Guest, qemu_img_check

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
