"""virtio-blk end to end: the built-in guest's polled driver, snapvm's
virtio-pci transport and the block layer, checked against the image files."""
import re

import pytest

from conftest import run_qemu_img
from vm import VM, checksum_bytes, run_snapvm, sector_bytes

pytestmark = pytest.mark.kvm


def raw_disk_args(path, node, ro=False):
    opts = f"driver=raw,node-name={node},file.driver=file,file.filename={path}"
    if ro:
        opts += ",read-only=on"
    return ["-blockdev", opts, "-device", f"virtio-blk-pci,drive={node}"]


def read_sector(path, lba):
    with open(path, "rb") as f:
        f.seek(lba * 512)
        return f.read(512)


def test_disk_write_survives_restart(tmp_path):
    img = tmp_path / "disk.raw"
    img.write_bytes(b"\0" * (4 << 20))
    args = ["-m", "64"] + raw_disk_args(img, "d0")
    with VM(args) as vm:
        vm.wait_ready()
        assert vm.cmd("disks") == "disks 1"
        assert vm.cmd("disk write 0 7 1234") == "ok"
        assert vm.cmd("disk write 0 8191 99") == "ok"  # the last sector
        assert vm.cmd("disk read 0 7") == "disk %016x" % checksum_bytes(sector_bytes(1234))
        assert vm.stop() == 0
    # The bytes are in the file, at the right place...
    assert read_sector(img, 7) == sector_bytes(1234)
    assert read_sector(img, 8191) == sector_bytes(99)
    assert read_sector(img, 6) == b"\0" * 512
    # ...and a new snapvm on the same image reads them back.
    with VM(args) as vm:
        vm.wait_ready()
        assert vm.cmd("disk read 0 7") == "disk %016x" % checksum_bytes(sector_bytes(1234))
        assert vm.cmd("disk read 0 6") == "disk %016x" % checksum_bytes(b"\0" * 512)


def test_guest_reads_what_the_host_wrote(tmp_path):
    img = tmp_path / "disk.raw"
    data = bytearray(1 << 20)
    data[512 * 100:512 * 101] = sector_bytes(777)
    img.write_bytes(bytes(data))
    with VM(["-m", "64"] + raw_disk_args(img, "d0")) as vm:
        vm.wait_ready()
        assert vm.cmd("disk read 0 100") == "disk %016x" % checksum_bytes(sector_bytes(777))
        assert vm.cmd("disk read 0 2048") == "error: LBA out of range"
        assert vm.cmd("disk read 1 0") == "error: no such disk 1"


def test_two_disks_in_command_line_order(tmp_path):
    a, b = tmp_path / "a.raw", tmp_path / "b.raw"
    a.write_bytes(b"\0" * (1 << 20))
    b.write_bytes(b"\0" * (2 << 20))
    with VM(["-m", "64"] + raw_disk_args(a, "da") + raw_disk_args(b, "db")) as vm:
        vm.wait_ready()
        assert vm.cmd("disks") == "disks 2"
        assert vm.cmd("disk write 1 3000 5") == "ok"  # only b has 3000 sectors
        assert vm.cmd("disk write 0 3000 5") == "error: LBA out of range"
        assert vm.stop() == 0
    assert read_sector(b, 3000) == sector_bytes(5)


def test_read_only_node_refuses_writes(tmp_path):
    img = tmp_path / "ro.raw"
    img.write_bytes(b"\xaa" * (1 << 20))
    with VM(["-m", "64"] + raw_disk_args(img, "d0", ro=True)) as vm:
        vm.wait_ready()
        assert vm.cmd("disk write 0 1 1") == "error: disk I/O failed"
        assert vm.cmd("disk read 0 1") == "disk %016x" % checksum_bytes(b"\xaa" * 512)
    assert read_sector(img, 1) == b"\xaa" * 512


def test_qcow2_disk_stays_consistent(tmp_path, qemu_img):
    img = tmp_path / "disk.qcow2"
    run_qemu_img("create", "-q", "-f", "qcow2", str(img), "8M")
    blockdev = ('{"driver": "qcow2", "node-name": "q0", '
                '"file": {"driver": "file", "filename": "%s"}}' % img)
    with VM(["-m", "64", "-blockdev", blockdev, "-device", "virtio-blk-pci,drive=q0"]) as vm:
        vm.wait_ready()
        for lba in (0, 129, 16383):
            assert vm.cmd(f"disk write 0 {lba} {lba + 1}") == "ok"
        assert vm.stop() == 0
    assert run_qemu_img("check", str(img)).returncode == 0
    raw = tmp_path / "out.raw"
    run_qemu_img("convert", "-O", "raw", str(img), str(raw))
    for lba in (0, 129, 16383):
        assert read_sector(raw, lba) == sector_bytes(lba + 1)


def test_disk_errors_on_the_command_line(tmp_path):
    img = tmp_path / "d.raw"
    img.write_bytes(b"\0" * 4096)
    cases = [
        (raw_disk_args(tmp_path / "missing.raw", "d0"), "missing.raw"),
        (["-blockdev", f"driver=raw,node-name=d0,file.driver=file,file.filename={img}",
          "-device", "virtio-blk-pci,drive=d1"], "drive 'd1' names no block node"),
        (raw_disk_args(img, "d0") + ["-device", "virtio-blk-pci,drive=d0"],
         "drive 'd0' is already in use"),
        (["-blockdev", "driver=nosuch,node-name=x"], "-blockdev"),
    ]
    for args, needle in cases:
        r = run_snapvm(args)
        assert r.returncode == 1, (args, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, r.stderr)
        assert re.match(r"^snapvm: ", lines[0])
