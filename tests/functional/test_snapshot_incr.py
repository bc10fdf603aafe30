"""Snapshot space and incremental saves (issue 10), on the real KVM guest.

RAM is a -mem-path file here, so the test can put exactly the content it
wants in guest RAM (zero pages interleaved with data at 4 KiB) and read back
exactly what a load restored (a second, paused VM whose RAM is another file).
"""
import itertools
import json
import os
import struct
import subprocess
import time

from snapshot_vm import Disk, Guest, qemu_img_check, qemu_img_snapshots
from test_snapshot_live import assert_ram_file_one_instant

MiB = 1 << 20
PAGE = 4096


def interleaved_ram(path, size, seed=1):
    """Per 8 KiB: one page of random bytes, then one zero page (a hole)."""
    data = os.urandom(size // 2)
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(0, size // 2, PAGE):
            f.seek(2 * i)
            f.write(data[i:i + PAGE])


def nonzero_bytes(data):
    zero = bytes(PAGE)
    return sum(PAGE for i in range(0, len(data), PAGE) if data[i:i + PAGE] != zero)


def allocated(path):
    return os.stat(path).st_blocks * 512


def save_stopped(g, ram, tag="a"):
    """Stop the guest, save `tag`, and return its RAM file as saved."""
    g.qmp.cmd("stop")
    g.qmp.cmd("savevm", tag=tag)
    with open(ram, "rb") as f:
        return f.read()


def load_into_file(tmp_path, disk, tag, size_mib, name):
    """Load `tag` into a fresh, paused VM whose RAM is a file; return the RAM."""
    ram = tmp_path / f"{name}.ram"
    with open(ram, "wb") as f:
        f.truncate(size_mib * MiB)
    g = Guest(tmp_path, disks=[disk], mem=str(size_mib), name=name, wait_ready=False,
              extra=["-S", "-mem-path", str(ram)]).start()
    try:
        g.qmp.cmd("loadvm", tag=tag)
        with open(ram, "rb") as f:
            return f.read()
    finally:
        g.stop()


# Zero pages interleaved at 4 KiB: test_snapshot_pack.py (they are packed).


def test_cluster_sizes_keep_every_page(tmp_path):
    """Whole-cluster rebuilding from RAM is exact at every cluster size,
    including clusters smaller than a page and larger than the zero runs."""
    size = 16
    for cluster in ("512", "4K", "2M"):
        d = tmp_path / cluster
        d.mkdir()
        img = d / "disk0.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                        f"cluster_size={cluster}", str(img), "16M"], check=True)
        ram = d / "vm.ram"
        interleaved_ram(ram, size * MiB)
        disk = Disk("disk0", "qcow2", "16M")
        g = Guest(d, disks=[disk], mem=str(size), extra=["-mem-path", str(ram)]).start()
        try:
            saved = save_stopped(g, ram)
        finally:
            g.stop()
        assert qemu_img_check(str(img)) == (0, 0), cluster
        assert load_into_file(d, disk, "a", size, "load") == saved, cluster


def check_u(path):
    """qemu-img check on an image snapvm has open (-U: it flushes after each command)."""
    r = subprocess.run(["qemu-img", "check", "-U", "--output=json", str(path)],
                       capture_output=True, text=True)
    assert r.returncode in (0, 3), r.stderr
    info = json.loads(r.stdout)
    return info.get("corruptions", 0) + info.get("check-errors", 0), info.get("leaks", 0)


def clusters_u(path):
    """Clusters in use (non-zero refcount) that hold data, read from the
    image's refcount table as qcow2.rst lays it out and from the file's
    holes (an all-zero RAM cluster keeps its place in the file as a hole,
    which takes no disk): an oracle independent of snapvm's code."""
    with open(path, "rb") as f:
        img = f.read()
        fd = f.fileno()

        def has_data(c):
            try:
                return os.lseek(fd, c * cs, os.SEEK_DATA) < (c + 1) * cs
            except OSError:  # ENXIO: only holes from here on
                return False
        cluster_bits, = struct.unpack_from(">I", img, 20)
        rt_off, rt_clusters = struct.unpack_from(">QI", img, 48)
        order, = struct.unpack_from(">I", img, 96)
        cs, width = 1 << cluster_bits, 1 << order
        assert width == 16, "the test images use 16-bit refcounts"
        used = 0
        for i in range(rt_clusters * cs // 8):
            block, = struct.unpack_from(">Q", img, rt_off + 8 * i)
            if block:
                refs = struct.unpack_from(f">{cs // 2}H", img, block)
                used += sum(1 for j, r in enumerate(refs) if r and has_data(i * (cs // 2) + j))
        return used


def save(g, tag, img):
    """savevm; returns how much the image grew (allocated bytes)."""
    before = allocated(img)
    g.qmp.cmd("savevm", tag=tag)
    return allocated(img) - before


def test_incremental_saves_write_only_what_changed(tmp_path):
    """The second and third saves cost the image what the guest changed
    (plus metadata), and every snapshot stays complete: deleting them in
    every order (snapvm and qemu-img) never changes another."""
    disk = Disk("disk0", "qcow2", "64M")
    img = disk.path(tmp_path)
    sums = {}
    with Guest(tmp_path, disks=[disk], mem="160") as g:
        g.guest.cmd("fill 1 128", timeout=60)
        sums["a"] = g.guest.sum()
        full = save(g, "a", img)
        assert full >= 128 * MiB
        g.guest.cmd("fill 2 8")
        sums["b"] = g.guest.sum()
        grew = save(g, "b", img)
        assert grew <= 8 * MiB + 2 * MiB, grew
        g.guest.cmd("fill 3 4")
        sums["c"] = g.guest.sum()
        grew = save(g, "c", img)
        assert grew <= 4 * MiB + 2 * MiB, grew
        assert check_u(img) == (0, 0)
        for tag in ("a", "c", "b"):
            g.qmp.cmd("loadvm", tag=tag)
            g.resync()
            assert g.guest.sum() == sums[tag], tag
    assert qemu_img_check(img) == (0, 0)
    assert sorted(qemu_img_snapshots(img)) == ["a", "b", "c"]

    for n, order in enumerate(itertools.permutations("abc")):
        d = tmp_path / f"order{n}"
        d.mkdir()
        subprocess.run(["cp", "--sparse=always", img, str(d / "disk0.qcow2")], check=True)
        with Guest(d, disks=[Disk("disk0", "qcow2", "64M")], mem="160") as g:
            left = list("abc")
            for tag in order:
                g.qmp.cmd("delvm", tag=tag)
                left.remove(tag)
                assert check_u(d / "disk0.qcow2") == (0, 0), (order, tag)
                for other in left:
                    g.qmp.cmd("loadvm", tag=other)
                    g.resync()
                    assert g.guest.sum() == sums[other], (order, tag, other)
        assert qemu_img_check(str(d / "disk0.qcow2")) == (0, 0)
        assert qemu_img_snapshots(str(d / "disk0.qcow2")) == {}

    # qemu-img deletes the middle one; snapvm still loads the others.
    subprocess.run(["qemu-img", "snapshot", "-d", "b", img], check=True)
    assert qemu_img_check(img) == (0, 0)
    with Guest(tmp_path, disks=[disk], mem="160", name="after") as g:
        for tag in ("c", "a"):
            g.qmp.cmd("loadvm", tag=tag)
            g.resync()
            assert g.guest.sum() == sums[tag], tag


def test_save_after_load_shares_the_loaded_snapshot(tmp_path):
    """A save after loading snapshot X writes only what changed since X."""
    disk = Disk("disk0", "qcow2", "64M")
    img = disk.path(tmp_path)
    with Guest(tmp_path, disks=[disk], mem="96") as g:
        g.guest.cmd("fill 1 64", timeout=60)
        sum_a = g.guest.sum()
        save(g, "a", img)
        g.guest.cmd("fill 2 64", timeout=60)
        sum_b = g.guest.sum()
        assert save(g, "b", img) >= 60 * MiB
        g.qmp.cmd("loadvm", tag="a")
        g.resync()
        assert g.guest.sum() == sum_a
        g.guest.cmd("fill 3 2")
        sum_c = g.guest.sum()
        grew = save(g, "c", img)
        assert grew <= 2 * MiB + 2 * MiB, grew
        g.qmp.cmd("delvm", tag="a")  # c does not depend on it
        for tag, want in (("c", sum_c), ("b", sum_b)):
            g.qmp.cmd("loadvm", tag=tag)
            g.resync()
            assert g.guest.sum() == want, tag
    assert qemu_img_check(img) == (0, 0)


def test_incremental_save_is_one_instant_with_dirtying_vcpus(tmp_path):
    """Two vCPUs, the guest rewriting RAM at full speed and reading its
    disk: the incremental save still holds RAM as of one instant."""
    ram_file = str(tmp_path / "ram")
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "256M")], mem="256",
               extra=["-smp", "2", "-mem-path", ram_file, "-append", "tick_ms=10"]) as g:
        assert g.guest.cmd("dirty 4000") == "ok"
        time.sleep(2)
        g.qmp.cmd("savevm", tag="full")
        time.sleep(0.5)
        g.qmp.cmd("savevm", tag="incr")
        g.qmp.cmd("stop")
        g.qmp.cmd("loadvm", tag="incr")  # stays stopped: RAM is the snapshot's
        assert_ram_file_one_instant(ram_file)
        g.qmp.cmd("cont")
        g.resync()
        assert g.guest.cmd("dirty 0") == "ok"
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)


def test_query_snapshots_reports_space(tmp_path):
    """stored-bytes: the vmstate a snapshot references; exclusive-bytes: what
    deleting it frees (checked against the image file itself)."""
    disk = Disk("disk0", "qcow2", "64M")
    img = disk.path(tmp_path)
    with Guest(tmp_path, disks=[disk], mem="96") as g:
        g.guest.cmd("fill 1 64", timeout=60)
        save(g, "a", img)
        g.guest.cmd("fill 2 16")
        save(g, "b", img)
        snaps = {s["tag"]: s for s in g.qmp.cmd("query-snapshots")}
        for tag in "ab":
            # The 64 MiB and the guest's own pages; the zero rest is holes.
            assert 64 * MiB <= snaps[tag]["stored-bytes"] <= 70 * MiB, snaps[tag]
        # a alone holds its version of the 16 MiB that b rewrote; b shares
        # the rest with a, and with the active area (the next save's base),
        # which lets go with it: deleting b frees its 16 MiB too.
        assert 16 * MiB <= snaps["a"]["exclusive-bytes"] <= 20 * MiB, snaps["a"]
        assert 16 * MiB <= snaps["b"]["exclusive-bytes"] <= 20 * MiB, snaps["b"]
        # qemu-img's count of allocated clusters is the independent oracle
        # (give or take the cluster of the rewritten snapshot table).
        before = clusters_u(img)
        g.qmp.cmd("delvm", tag="b")
        assert abs((before - clusters_u(img)) * 65536 - snaps["b"]["exclusive-bytes"]) <= 2 * 65536
        snaps = {s["tag"]: s for s in g.qmp.cmd("query-snapshots")}
        assert list(snaps) == ["a"]
        before = clusters_u(img)
        g.qmp.cmd("delvm", tag="a")
        assert abs((before - clusters_u(img)) * 65536 - snaps["a"]["exclusive-bytes"]) <= 2 * 65536
    assert qemu_img_check(img) == (0, 0)


def test_save_after_a_reset_holds_the_reset_ram(tmp_path):
    """system_reset copies the guest image into RAM behind the vCPUs' back:
    the next (incremental) save must still hold RAM exactly as it is."""
    size = 32
    ram = tmp_path / "vm.ram"
    disk = Disk("disk0", "qcow2", "64M")
    g = Guest(tmp_path, disks=[disk], mem=str(size), extra=["-mem-path", str(ram)]).start()
    try:
        g.guest.cmd("fill 4 8")
        time.sleep(0.3)  # the guest's own variables move on from the image's
        g.qmp.cmd("savevm", tag="a")
        g.qmp.cmd("stop")
        g.qmp.cmd("system_reset")  # a stopped VM stays stopped: no vCPU touches RAM
        g.qmp.cmd("savevm", tag="b")
        with open(ram, "rb") as f:
            saved = f.read()
    finally:
        g.stop()
    assert qemu_img_check(disk.path(tmp_path)) == (0, 0)
    assert load_into_file(tmp_path, disk, "b", size, "load") == saved
