"""Snapshot transactions across several qcow2 nodes (block.h: prepare, commit,
abort, finish): a whole-VM operation over two disks is all or nothing, and
qemu-img check stays clean (no errors, no leaks) after every abort."""
import random

import pytest

from test_block_lib import (Blocktool, BlockError, blockdev_qcow2, crc, qemu_img,
                            qemu_img_check)

MiB = 1 << 20


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    p = tmp_path_factory.mktemp("pool") / "pool.bin"
    p.write_bytes(random.Random(9).randbytes(2 * MiB))
    return str(p)


def two_disks(tmp_path):
    imgs = []
    for n in ("a", "b"):
        img = str(tmp_path / f"{n}.qcow2")
        qemu_img("create", "-q", "-f", "qcow2", img, "8M")
        imgs.append(img)
    return imgs


def open_two(imgs, pool):
    return Blocktool(blockdev_qcow2(imgs[0], name="a"), blockdev_qcow2(imgs[1], name="b"),
                     pool=pool)


def tags(img):
    out = qemu_img("snapshot", "-l", img).stdout.splitlines()[2:]
    return sorted(line.split()[1] for line in out)


def test_goto_on_two_nodes_aborted_after_commit(tmp_path, pool):
    imgs = two_disks(tmp_path)
    with open_two(imgs, pool) as bt:
        crcs = {}
        for n in ("a", "b"):
            bt.ok(f"use {n}")
            bt.ok("write 0 65536 0")
            bt.ok("snap-create s1")
            bt.ok("write 0 65536 65536")  # now differs from s1
            crcs[n] = bt.crc("read 0 65536")
        bt.ok("use a")
        assert bt.ok("txn-goto s1") == "ok txn=0"
        bt.ok("use b")
        assert bt.ok("txn-goto s1") == "ok txn=1"
        # Between prepare and finish the node refuses writes...
        _, out = bt.cmd("write 0 512 0", check=False)
        assert out == "error: node 'b' has a snapshot operation in progress", out
        bt.ok("txn-commit 0")
        bt.ok("txn-commit 1")
        # ...and after the commit it reads the snapshot's disk.
        assert bt.crc("read 0 65536") == crc(open(pool, "rb").read(65536))
        # A later step of the whole-VM load failed: undo both.
        bt.ok("txn-abort 0")
        bt.ok("txn-abort 1")
        for n in ("a", "b"):
            bt.ok(f"use {n}")
            assert bt.crc("read 0 65536") == crcs[n]
            bt.ok("write 4096 512 0")  # writable again
    for img in imgs:
        qemu_img_check(img)
        assert tags(img) == ["s1"]


def test_create_on_two_nodes_second_prepare_fails(tmp_path, pool):
    imgs = two_disks(tmp_path)
    with open_two(imgs, pool) as bt:
        bt.ok("use b")
        bt.ok("snap-create taken")
        bt.ok("use a")
        bt.ok("write 0 65536 0")
        bt.ok("vm-write 0 300000 1000")
        bt.ok("txn-create taken")
        bt.ok("use b")
        _, out = bt.cmd("txn-create taken", check=False)
        assert out == "error: node 'b' already has a snapshot named 'taken'", out
        bt.ok("use a")
        bt.ok("txn-abort 0")
        # The vmstate is still the active one (the save may be retried).
        assert bt.crc("vm-read 0 300000") == crc(open(pool, "rb").read()[1000:301000])
        bt.ok("vm-discard")
    qemu_img_check(imgs[0])
    qemu_img_check(imgs[1])
    assert tags(imgs[0]) == []
    assert tags(imgs[1]) == ["taken"]


def test_create_on_two_nodes_aborted_after_commit(tmp_path, pool):
    imgs = two_disks(tmp_path)
    with open_two(imgs, pool) as bt:
        for n in ("a", "b"):
            bt.ok(f"use {n}")
            bt.ok("write 0 200000 0")
            bt.ok("snap-create old")
        bt.ok("use a")
        bt.ok("vm-write 0 200000 5000")
        bt.ok("txn-create new")
        bt.ok("use b")
        bt.ok("txn-create new")
        bt.ok("txn-commit 0")
        bt.ok("txn-commit 1")
        data, _ = bt.cmd("snap-list")
        assert [d.split()[2] for d in data] == ["name=old", "name=new"]
        bt.ok("txn-abort 0")
        bt.ok("txn-abort 1")
        data, _ = bt.cmd("snap-list")
        assert [d.split()[2] for d in data] == ["name=old"]
        bt.ok("use a")
        assert bt.crc("vm-read 0 200000") == crc(open(pool, "rb").read()[5000:205000])
        bt.ok("vm-discard")
        bt.ok("write 0 4096 0")  # the old snapshot's clusters are shared: COW
    for img in imgs:
        qemu_img_check(img)
        assert tags(img) == ["old"]


def test_committed_create_and_delete_finish(tmp_path, pool):
    imgs = two_disks(tmp_path)
    with open_two(imgs, pool) as bt:
        for n in ("a", "b"):
            bt.ok(f"use {n}")
            bt.ok("write 0 100000 0")
        bt.ok("use a")
        bt.ok("vm-write 0 100000 7")
        bt.ok("txn-create s")
        bt.ok("use b")
        bt.ok("txn-create s")
        bt.ok("txn-commit 0")
        bt.ok("txn-commit 1")
        bt.ok("txn-finish 0")
        bt.ok("txn-finish 1")
        bt.ok("use a")
        assert bt.crc("snap-vmread s 0 100000") == crc(open(pool, "rb").read()[7:100007])
        bt.ok("txn-delete s")
        bt.ok("use b")
        bt.ok("txn-delete s")
        bt.ok("txn-commit 2")
        bt.ok("txn-commit 3")
        bt.ok("txn-finish 2")
        bt.ok("txn-finish 3")
    for img in imgs:
        qemu_img_check(img)
        assert tags(img) == []


def test_prepared_transaction_is_undone_at_exit(tmp_path, pool):
    imgs = two_disks(tmp_path)
    with open_two(imgs, pool) as bt:
        bt.ok("use a")
        bt.ok("write 0 100000 0")
        bt.ok("txn-create s")
    qemu_img_check(imgs[0])
    assert tags(imgs[0]) == []


def test_replace_in_one_commit(tmp_path, pool):
    img = str(tmp_path / "r.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "8M")
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 0 100000 0")
        bt.ok("vm-write 0 100000 100")
        bt.ok("snap-create t")
        bt.ok("snap-create other")
        old = bt.crc("snap-vmread t 0 100000")
        bt.ok("write 0 100000 300000")
        bt.ok("vm-write 0 50000 200")
        # Aborted after its commit: the old 't' is back, unchanged.
        assert bt.ok("txn-replace 1 t") == "ok txn=0"
        bt.ok("txn-commit 0")
        data, _ = bt.cmd("snap-list")
        assert [d.split()[1:3] for d in data] == [["id=2", "name=other"], ["id=3", "name=t"]]
        bt.ok("txn-abort 0")
        assert bt.crc("snap-vmread t 0 100000") == old
        data, _ = bt.cmd("snap-list")
        assert [d.split()[1:3] for d in data] == [["id=1", "name=t"], ["id=2", "name=other"]]
        # Committed and finished: the new 't' replaces it.
        bt.ok("txn-replace 1 t")
        bt.ok("txn-commit 1")
        bt.ok("txn-finish 1")
        assert bt.crc("snap-vmread t 0 50000") == crc(open(pool, "rb").read()[200:50200])
        _, out = bt.cmd("txn-replace 1 t", check=False)
        assert out == "error: node 'disk0' has no snapshot with id '1'", out
        _, out = bt.cmd("txn-replace 3 other", check=False)
        assert out == "error: node 'disk0' already has a snapshot named 'other'", out
    qemu_img_check(img)
    assert tags(img) == ["other", "t"]


def test_tags_are_checked_whole(tmp_path, pool):
    img = str(tmp_path / "n.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "8M")
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        _, out = bt.cmd("snap-create a\x01b", check=False)
        assert out == "error: node 'disk0': snapshot name 'a\x01b' contains control character 0x1", out
        bt.ok("snap-create " + "x" * 255)
    qemu_img_check(img)
    assert tags(img) == ["x" * 255]
