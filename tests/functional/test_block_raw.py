"""The file and raw drivers through the real block layer (blocktool), and
QEMU-compatible image locking against a real qemu-system-x86_64."""
import os
import subprocess
import time

import pytest

from test_block_lib import (Blocktool, BlockError, blockdev_qcow2, blockdev_raw, crc,
                            qemu_img, run_blocktool)


@pytest.fixture
def pool(tmp_path):
    p = tmp_path / "pool.bin"
    p.write_bytes(os.urandom(1 << 20))
    return str(p)


def test_raw_write_read_dump(tmp_path, pool):
    img = tmp_path / "d.raw"
    img.write_bytes(bytes(256 << 10))
    data = open(pool, "rb").read()
    with Blocktool(blockdev_raw(img), pool=pool) as bt:
        assert bt.ok("info") == f"ok driver=raw length={256 << 10} cluster=0"
        bt.ok("write 1000 5000 77")
        assert bt.crc("read 1000 5000") == crc(data[77:5077])
        with pytest.raises(BlockError, match="beyond the end"):
            bt.ok(f"read {256 << 10} 1")
        bt.ok(f"dump {tmp_path / 'out.raw'}")
    assert (tmp_path / "out.raw").read_bytes() == img.read_bytes()
    assert img.read_bytes()[1000:6000] == data[77:5077]


def test_missing_file_and_bad_options(tmp_path):
    r = run_blocktool("--blockdev", blockdev_raw(tmp_path / "nope.raw"))
    assert r.returncode != 0
    assert "node 'disk0'" in r.stderr and "nope.raw" in r.stderr
    img = tmp_path / "d.raw"
    img.write_bytes(bytes(4096))
    r = run_blocktool("--blockdev", blockdev_raw(img, extra="frobnicate=on"))
    assert "unknown option 'frobnicate'" in r.stderr


def qemu_holding(img, read_only=False):
    """Start qemu-system-x86_64 holding img (qcow2) open; return the process."""
    ro = ",read-only=on" if read_only else ""
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
         "-blockdev", f"driver=qcow2,node-name=d{ro},file.driver=file,file.filename={img}",
         "-S"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until QEMU has taken its locks (visible in /proc/locks).
    ino = os.stat(img).st_ino
    for _ in range(200):
        with open("/proc/locks") as f:
            if any(f":{ino} " in line for line in f):
                return proc
        if proc.poll() is not None:
            raise AssertionError(f"qemu exited: {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("qemu never locked the image")


def test_qemu_writer_blocks_snapvm(tmp_path):
    img = str(tmp_path / "q.qcow2")
    qemu_img("create", "-f", "qcow2", img, "1M")
    proc = qemu_holding(img)
    try:
        r = run_blocktool("--blockdev", blockdev_raw(img), "-c", "info")
        assert r.returncode != 0
        assert 'Failed to get "write" lock' in r.stderr
        assert f"[{img}]" in r.stderr and "another process" in r.stderr
        # The holder is named.
        assert f"qemu-system-x86 (pid {proc.pid})" in r.stderr
        r = run_blocktool("--blockdev", blockdev_raw(img, extra="read-only=on"), "-c", "info")
        assert 'Failed to get shared "write" lock' in r.stderr
        # Like qemu-img -U: a force-share reader gets in.
        r = run_blocktool("--blockdev", blockdev_raw(img, extra="read-only=on,force-share=on"),
                          "-c", "info")
        assert r.returncode == 0, r.stderr
        r = run_blocktool("--blockdev", blockdev_raw(img, extra="force-share=on"), "-c", "info")
        assert "force-share=on needs read-only=on" in r.stderr
    finally:
        proc.kill()
        proc.wait()
    r = run_blocktool("--blockdev", blockdev_raw(img), "-c", "info")
    assert r.returncode == 0, r.stderr


def test_qemu_reader_blocks_snapvm_writer(tmp_path):
    img = str(tmp_path / "q.qcow2")
    qemu_img("create", "-f", "qcow2", img, "1M")
    proc = qemu_holding(img, read_only=True)
    try:
        r = run_blocktool("--blockdev", blockdev_raw(img), "-c", "info")
        assert 'Failed to get "write" lock' in r.stderr
    finally:
        proc.kill()
        proc.wait()


def test_snapvm_writer_blocks_qemu(tmp_path):
    img = str(tmp_path / "q.qcow2")
    qemu_img("create", "-f", "qcow2", img, "1M")
    with Blocktool(blockdev_raw(img)) as bt:
        bt.ok("info")
        r = subprocess.run(
            ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
             "-blockdev", f"driver=qcow2,node-name=d,file.driver=file,file.filename={img}",
             "-S"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode != 0
        assert 'Failed to get "write" lock' in r.stderr
        assert "Is another process using the image" in r.stderr
        r = qemu_img("info", img, check=False)
        assert r.returncode != 0 and "lock" in r.stderr
    # Released on exit: qemu-img can open it again.
    qemu_img("info", img)
