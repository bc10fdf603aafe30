"""Image and backing files that are not regular files (FIFO, character
device, directory) are refused at once, without blocking and without
reading them; a backing chain that loops is refused by name."""
import os
import subprocess

import pytest

from test_block_lib import BLOCKTOOL, blockdev_qcow2, qemu_img


def run(img, extra=""):
    return subprocess.run([BLOCKTOOL, "--blockdev", blockdev_qcow2(img, extra=extra), "-c",
                           "info"], capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("kind", ["fifo", "chardev", "directory"])
def test_image_that_is_not_a_file(tmp_path, kind):
    path = str(tmp_path / "x")
    if kind == "fifo":
        os.mkfifo(path)
        what = "a FIFO"
    elif kind == "chardev":
        path = "/dev/zero"
        what = "a character device"
    else:
        os.mkdir(path)
        what = "a directory"
    r = run(path, extra="read-only=on")  # read-only: /dev/zero and a directory open
    assert r.returncode == 1
    assert f"'{path}' is {what}, not an image file (a regular file or block device)" in \
        r.stdout, r.stdout


@pytest.mark.parametrize("kind", ["fifo", "chardev"])
def test_backing_file_that_is_not_a_file(tmp_path, kind):
    target = str(tmp_path / "fifo")
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target = "/dev/zero"
    img = str(tmp_path / "top.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", target, "-F", "raw", img, "1M")
    r = run(img)  # would block forever in open() or read() before the fix
    assert r.returncode == 1
    what = "a FIFO" if kind == "fifo" else "a character device"
    assert r.stdout.startswith(f"error: node 'disk0': backing file of '{img}': '{target}' is "
                               f"{what}, not an image file"), r.stdout


def test_backing_chain_loop(tmp_path):
    a, b = str(tmp_path / "a.qcow2"), str(tmp_path / "b.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", a, "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", a, "-F", "qcow2", b, "1M")
    qemu_img("rebase", "-q", "-u", "-b", b, "-F", "qcow2", a)
    before = open(a, "rb").read(), open(b, "rb").read()
    r = run(b, extra="file.locking=off")
    assert r.returncode == 1
    assert f"the backing chain loops: '{b}' is already in it" in r.stdout, r.stdout
    qemu_img("rebase", "-q", "-u", "-b", a, "-F", "qcow2", a)
    r = run(a, extra="file.locking=off")
    assert f"the backing chain loops: '{a}' is already in it (the image is its own backing " \
        "file)" in r.stdout, r.stdout
    assert open(b, "rb").read() == before[1]  # refused images are not written
