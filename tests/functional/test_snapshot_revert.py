"""Revert in place (issue 10): loadvm of the snapshot the VM last loaded or
saved puts back only the pages changed since, and must leave exactly the
snapshot's RAM and disks -- whichever way each page comes back (the image
mapping shown again, zeros, or bytes read from the image), with the guest
and its disk device writing RAM, with several vCPUs, and with -mem-path RAM.

Each test checks that the revert really was in place (snapvm's debug log
says so) and that the result is the snapshot: the guest's own checksum of
its data region, its disk sectors, or RAM read back from a -mem-path file.
"""
import os
import re
import time

import pytest

from snapshot_vm import Disk, Guest, qemu_img_check
from test_snapshot_live import assert_ram_file_one_instant

pytestmark = pytest.mark.kvm

DEBUG = {**os.environ, "SNAPVM_DEBUG": "1"}


def reverts_in_place(g):
    return len(re.findall(r"revert in place: ", g.guest.stderr()))


def revert(g, tag):
    """loadvm `tag`, which must be a revert in place; then resync the guest."""
    before = reverts_in_place(g)
    g.qmp.cmd("loadvm", tag=tag)
    assert reverts_in_place(g) == before + 1, "the load was not a revert in place"
    g.resync()


def swapped_pieces(g):
    """Pieces put back by swapping mappings, over all reverts so far."""
    return sum(int(n) for n in re.findall(r"\((\d+) by swapping mappings\)", g.guest.stderr()))


def maps_lines(g):
    with open(f"/proc/{g.guest.proc.pid}/maps") as f:
        return f.readlines()


def image_mappings(g, image):
    """How many mappings of the image the process has (what a revert in
    place swaps back in must merge into).  Counted by name: the process's
    other mappings (a sanitizer's allocator, say) come and go."""
    return sum(1 for line in maps_lines(g) if line.rstrip().endswith(image))


def mappings_of_size(g, size):
    """Mappings exactly `size` bytes long: guest RAM, while it is one."""
    n = 0
    for line in maps_lines(g):
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        n += hi - lo == size
    return n


def full_load(g, tag):
    before = reverts_in_place(g)
    g.qmp.cmd("loadvm", tag=tag)
    assert reverts_in_place(g) == before, "a load of another snapshot was done in place"
    g.resync()


def test_revert_after_load_puts_back_mapped_and_zero_pages(tmp_path):
    """After a load, RAM maps the snapshot: changed mapped pages come back
    from the image, changed zero pages come back as zeros."""
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem="128", env=DEBUG) as g:
        g.guest.cmd("fill 1 16")  # 16 MiB of data, the rest of the region zero
        saved = g.guest.sum()
        g.qmp.cmd("savevm", tag="a")
        g.qmp.cmd("savevm", tag="other")  # the VM is at "other" now
        full_load(g, "a")  # RAM maps a's clusters
        assert g.guest.sum() == saved
        image = disk.path(tmp_path)
        maps = image_mappings(g, image)
        assert maps > 0
        for seed in (2, 3, 4):
            assert g.guest.cmd(f"fill {seed} 48") == "ok"  # mapped data and zero pages
            assert g.guest.sum() != saved
            swapped = swapped_pieces(g)
            revert(g, "a")
            assert g.guest.sum() == saved
            # 48 MiB changed: put back by swapping mappings, and the new
            # mappings merge with their neighbours.
            assert swapped_pieces(g) > swapped
            assert image_mappings(g, image) == maps
        # A revert with the guest writing small scattered pieces at once.
        for seed in (5, 6):
            g.guest.cmd(f"fill {seed} 1")
            revert(g, "a")
            assert g.guest.sum() == saved
            assert image_mappings(g, image) == maps
        # Deleting the snapshot RAM maps (swapped-in mappings included) keeps RAM.
        g.qmp.cmd("delvm", tag="a")
        assert g.guest.sum() == saved
    assert qemu_img_check(disk.path(tmp_path)) == (0, 0)


def test_revert_after_save_reads_the_changed_pages(tmp_path):
    """After a save nothing is mapped: changed pages are read back."""
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem="128", env=DEBUG) as g:
        g.guest.cmd("fill 5 24")
        saved = g.guest.sum()
        g.qmp.cmd("savevm", tag="a")
        g.guest.cmd("fill 6 40")
        revert(g, "a")
        assert g.guest.sum() == saved
        # And again: the base stays, counting from the revert.
        g.guest.cmd("fill 7 8")
        revert(g, "a")
        assert g.guest.sum() == saved
        # The next save is incremental from it, and complete by itself.
        g.guest.cmd("fill 8 4")
        later = g.guest.sum()
        g.qmp.cmd("savevm", tag="b")
        g.qmp.cmd("delvm", tag="a")
        g.guest.cmd("fill 9 48")
        revert(g, "b")
        assert g.guest.sum() == later
    assert qemu_img_check(disk.path(tmp_path)) == (0, 0)


def test_revert_to_clusters_a_save_left_unallocated_swaps_in_zeros(tmp_path):
    """Pages zeroed before an incremental save leave their clusters
    unallocated in it; changed again, a revert swaps fresh anonymous memory
    in (nothing is mapped after a save), and RAM reads as zeros there."""
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem="128", env=DEBUG) as g:
        g.guest.cmd("fill 1 32")
        g.qmp.cmd("savevm", tag="a")
        assert g.guest.cmd("zero 16") == "ok"
        zeroed = g.guest.sum()
        g.qmp.cmd("savevm", tag="b")  # incremental: the first 16 MiB unallocated
        assert mappings_of_size(g, 128 << 20) == 1  # RAM: one anonymous mapping
        for seed in (2, 3):
            g.guest.cmd(f"fill {seed} 16")
            assert g.guest.sum() != zeroed
            swapped = swapped_pieces(g)
            revert(g, "b")
            assert g.guest.sum() == zeroed
            assert swapped_pieces(g) == swapped + 1
            assert mappings_of_size(g, 128 << 20) == 1  # the zeros merged back into it
        g.qmp.cmd("delvm", tag="a")
        g.guest.cmd("fill 4 8")
        revert(g, "b")
        assert g.guest.sum() == zeroed
    assert qemu_img_check(disk.path(tmp_path)) == (0, 0)


def test_revert_over_another_snapshots_mapping(tmp_path):
    """Load Y (RAM maps Y), clear pages, save X, change them: reverting to X
    must give X's zeros, not Y's mapped pages shown again."""
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem="128", env=DEBUG) as g:
        g.guest.cmd("fill 1 32")
        y = g.guest.sum()
        g.qmp.cmd("savevm", tag="y")
        g.qmp.cmd("savevm", tag="other")
        full_load(g, "y")  # RAM maps y now
        assert g.guest.sum() == y
        assert g.guest.cmd("zero 16") == "ok"  # private zero pages over y's mapping
        g.guest.cmd("fill 3 1")
        x = g.guest.sum()
        g.qmp.cmd("savevm", tag="x")  # x shares y's clusters beyond 16 MiB
        g.guest.cmd("fill 4 32")
        revert(g, "x")
        assert g.guest.sum() == x
        full_load(g, "y")
        assert g.guest.sum() == y
    assert qemu_img_check(disk.path(tmp_path)) == (0, 0)


def test_revert_puts_back_the_disk_and_device_writes(tmp_path):
    """The guest writes its disk and reads it (the device writes guest RAM):
    a revert gives back the snapshot's disk and a device that still works;
    with the disk unchanged since, its revert changes nothing on disk."""
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem="64", env=DEBUG) as g:
        assert g.guest.cmd("disk write 0 7 111") == "ok"
        at_a = g.sector(0, 7)
        g.qmp.cmd("savevm", tag="a")
        for seed in (222, 333):
            assert g.guest.cmd(f"disk write 0 7 {seed}") == "ok"
            assert g.guest.cmd("disk write 0 9 5") == "ok"
            assert g.sector(0, 7) != at_a
            revert(g, "a")
            assert g.sector(0, 7) == at_a
        zero = g.sector(0, 9)
        # RAM changed, the disk only read: its revert is no change at all.
        g.guest.cmd("fill 3 8")
        size = os.path.getsize(disk.path(tmp_path))
        revert(g, "a")
        assert os.path.getsize(disk.path(tmp_path)) == size
        assert g.sector(0, 7) == at_a and g.sector(0, 9) == zero
        # Written after that revert: the next one puts the disk back again.
        assert g.guest.cmd("disk write 0 7 444") == "ok"
        revert(g, "a")
        assert g.sector(0, 7) == at_a
    assert qemu_img_check(disk.path(tmp_path)) == (0, 0)


def test_revert_is_one_instant_with_dirtying_vcpus(tmp_path):
    """Two vCPUs, the guest rewriting RAM, -mem-path RAM: right after a
    revert, RAM is the snapshot's plus only what the guest wrote since."""
    ram_file = str(tmp_path / "ram")
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "256M")], mem="256", env=DEBUG,
               extra=["-smp", "2", "-mem-path", ram_file, "-append", "tick_ms=10"]) as g:
        # Fast enough that pages change during every step, slow enough that
        # less than half of RAM changes between a save and a revert (more
        # and the load maps RAM whole instead).
        assert g.guest.cmd("dirty 400") == "ok"
        time.sleep(1)  # every page of the data region has been written once
        g.qmp.cmd("stop")
        g.qmp.cmd("savevm", tag="a")
        with open(ram_file, "rb") as f:
            at_a = f.read()  # a's RAM, byte for byte
        g.qmp.cmd("cont")
        for i in range(6):
            time.sleep(0.05)
            # Half the reverts with the guest running (it runs on from a at
            # once), half of a stopped one (it stays stopped, at a exactly).
            running = i % 2 == 1
            if not running:
                g.qmp.cmd("stop")
            g.qmp.cmd("loadvm", tag="a")
            if running:
                g.qmp.cmd("stop")
            assert_ram_file_one_instant(ram_file)
            if not running:
                with open(ram_file, "rb") as f:
                    assert f.read() == at_a, "a stopped VM's revert left RAM that is not a's"
            g.qmp.cmd("cont")
        # Each revert was in place unless a slow moment let the guest change
        # more than half of RAM first (it is then mapped anew: also checked).
        assert reverts_in_place(g) >= 3, g.guest.stderr()[-2000:]
        g.resync()
        assert g.guest.cmd("dirty 0") == "ok"
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)


def test_loading_another_snapshot_is_not_in_place(tmp_path):
    """Only the VM's own base reverts in place: another tag, or the base
    after it was deleted and saved again, loads whole."""
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem="64", env=DEBUG) as g:
        g.guest.cmd("fill 1 8")
        a = g.guest.sum()
        g.qmp.cmd("savevm", tag="a")
        g.guest.cmd("fill 2 8")
        b = g.guest.sum()
        g.qmp.cmd("savevm", tag="b")
        full_load(g, "a")
        assert g.guest.sum() == a
        full_load(g, "b")
        assert g.guest.sum() == b
        g.qmp.cmd("delvm", tag="b")  # the base goes with it
        g.guest.cmd("fill 3 8")
        full_load(g, "a")
        assert g.guest.sum() == a
    assert qemu_img_check(disk.path(tmp_path)) == (0, 0)


@pytest.mark.parametrize("op", ["read", "write", "flush"])
def test_revert_in_place_fails_cleanly_under_io_errors(tmp_path, op):
    """EIO at each I/O a revert in place does (the changed pages read back,
    the disk's goto): the load fails naming it, the guest goes on exactly as
    it was, and a later load still works (in place or whole)."""
    from faultctl import FaultCtl, fault_env
    env = fault_env(tmp_path, base=DEBUG)
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem="64", env=env) as g:
        f = FaultCtl(env["SNAPVM_FAULT_CTL"])
        g.guest.cmd("fill 1 8")
        assert g.guest.cmd("disk write 0 3 11") == "ok"
        saved, at_a = g.guest.sum(), g.sector(0, 3)
        g.qmp.cmd("savevm", tag="a")
        failures = 0
        for nth in range(1, 40):
            g.guest.cmd(f"fill {nth + 1} 8")  # read back on revert: nothing is mapped
            assert g.guest.cmd(f"disk write 0 3 {nth + 20}") == "ok"  # a real goto
            now, now_sector = g.guest.sum(), g.sector(0, 3)
            f.arm(f"op={op},nth={nth},errno=EIO")
            try:
                g.qmp.cmd("loadvm", tag="a")
            except Exception as e:  # the QMP error
                f.disarm()
                failures += 1
                assert "Input/output error" in str(e), e
                assert g.qmp.cmd("query-status")["status"] == "running"
                assert g.guest.sum() == now and g.sector(0, 3) == now_sector
                g.qmp.cmd("loadvm", tag="a")  # whole: the failed revert lost its marks
                g.resync()
                assert g.guest.sum() == saved and g.sector(0, 3) == at_a
                continue
            f.disarm()
            g.resync()
            assert g.guest.sum() == saved and g.sector(0, 3) == at_a
            break  # the Nth I/O was past the revert's last one
        assert failures >= 1, f"no {op} in a revert in place"
    assert qemu_img_check(disk.path(tmp_path)) == (0, 0)


def test_revert_after_most_of_ram_changed_maps_it_anew(tmp_path):
    """With more than half of RAM changed, the snapshot is mapped anew
    rather than read page by page; the base stays all the same."""
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem="64", env=DEBUG) as g:
        g.guest.cmd("fill 1 8")
        saved = g.guest.sum()
        g.qmp.cmd("savevm", tag="a")
        g.guest.cmd("fill 2 60")
        g.qmp.cmd("loadvm", tag="a")
        assert re.search(r"revert of snapshot \S+: \d+ of \d+ pages changed, mapped anew",
                         g.guest.stderr())
        g.resync()
        assert g.guest.sum() == saved
        g.guest.cmd("fill 3 4")
        revert(g, "a")  # still the base
        assert g.guest.sum() == saved
    assert qemu_img_check(disk.path(tmp_path)) == (0, 0)
