"""Snapshot space and incremental saves (issue 10), on the real KVM guest.

RAM is a -mem-path file here, so the test can put exactly the content it
wants in guest RAM (zero pages interleaved with data at 4 KiB) and read back
exactly what a load restored (a second, paused VM whose RAM is another file).
"""
import os
import subprocess

from snapshot_vm import Disk, Guest, qemu_img_check, qemu_img_snapshots

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


def test_interleaved_zero_pages_take_no_space(tmp_path):
    """Zero pages between data pages at 4 KiB cost the image nothing, and a
    load gives back every byte of RAM as it was saved."""
    size = 64
    ram = tmp_path / "vm.ram"
    interleaved_ram(ram, size * MiB)
    disk = Disk("disk0", "qcow2", "64M")
    g = Guest(tmp_path, disks=[disk], mem=str(size), extra=["-mem-path", str(ram)]).start()
    try:
        img = disk.path(tmp_path)
        g.qmp.cmd("stop")  # RAM stays as it is saved, so the file is the snapshot's RAM
        before = allocated(img)
        g.qmp.cmd("savevm", tag="a")
        with open(ram, "rb") as f:
            saved = f.read()
    finally:
        g.stop()
    growth = allocated(img) - before
    data = nonzero_bytes(saved)
    assert data >= size * MiB // 2 - MiB  # the pattern, give or take the guest's own pages
    # Only the non-zero pages, plus metadata (L2 tables, refcounts, header, devices).
    assert growth <= data + 2 * MiB, (growth, data)
    assert qemu_img_check(img) == (0, 0)
    assert qemu_img_snapshots(img)["a"]["vm-state-size"] > size * MiB
    assert load_into_file(tmp_path, disk, "a", size, "load") == saved


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
            g.qmp.cmd("stop")
            g.qmp.cmd("savevm", tag="a")
            with open(ram, "rb") as f:
                saved = f.read()
        finally:
            g.stop()
        assert qemu_img_check(str(img)) == (0, 0), cluster
        assert load_into_file(d, disk, "a", size, "load") == saved, cluster
