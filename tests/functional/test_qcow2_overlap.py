"""Hostile qcow2 metadata: L2 entries that point at other metadata or far past
the end of the file, and refcounts that call live metadata free.  snapvm
refuses the write (QEMU's "Preventing invalid write on metadata"), marks the
image corrupt (incompatible bit 1), names what would have been overwritten,
never grows the file to the bogus offset, and opens the image read-write
again only after 'qemu-img check -r all'."""
import os
import random
import shutil

import pytest

from test_block_lib import Blocktool, BlockError, blockdev_qcow2, qemu_img, run_blocktool

MiB = 1 << 20
CL = 65536


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    p = tmp_path_factory.mktemp("pool") / "pool.bin"
    p.write_bytes(random.Random(4).randbytes(MiB))
    return str(p)


def u64(data, off):
    return int.from_bytes(data[off:off + 8], "big")


def header(img):
    h = open(img, "rb").read(104)
    return {"l1": u64(h, 40), "reftable": u64(h, 48), "snapshots": u64(h, 64)}


def first_snapshot_l1(img):
    with open(img, "rb") as f:
        f.seek(header(img)["snapshots"])
        return u64(f.read(8), 0)


def l2_entry_pos(img, l1_off, guest_off):
    """File position of the L2 entry for guest_off under the L1 table at l1_off."""
    with open(img, "rb") as f:
        f.seek(l1_off + (guest_off >> 29) * 8)
        l2 = int.from_bytes(f.read(8), "big") & 0x00fffffffffffe00
        assert l2, "no L2 table"
        return l2 + ((guest_off >> 16) & 8191) * 8


def poke(img, pos, value):
    with open(img, "r+b") as f:
        f.seek(pos)
        f.write(value.to_bytes(8, "big"))


def refblock0(img):
    with open(img, "rb") as f:
        f.seek(header(img)["reftable"])
        return u64(f.read(8), 0)


def make(tmp_path, pool, with_vmstate=False):
    img = str(tmp_path / "h.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "32M")
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 0 131072 0")
        if with_vmstate:
            bt.ok("vm-write 0 200000 1000")
        bt.ok("snap-create s1")
    return img


def open_rw(img):
    return run_blocktool("--blockdev", blockdev_qcow2(img), "-c", "info")


def assert_corrupt_marked(img):
    assert u64(open(img, "rb").read(80), 72) & 2, "corrupt bit not set"
    r = open_rw(img)
    assert r.returncode == 1 and "is marked corrupt; open it read-only or repair it with " \
        "'qemu-img check -r all'" in r.stdout, r.stdout
    r = run_blocktool("--blockdev", blockdev_qcow2(img, extra="read-only=on"), "-c", "read 0 4096")
    assert r.stdout.startswith("ok crc="), r.stdout
    # After QEMU's repair it opens read-write again.
    qemu_img("check", "-q", "-r", "all", img, check=False)
    assert open_rw(img).returncode == 0


def test_guest_write_on_a_refcount_block_is_refused(tmp_path, pool):
    img = make(tmp_path, pool)
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 0 4096 0")  # guest cluster 0 is the active image's own again (COW)
    # Now point guest cluster 0 (refcount 1: written in place) at refcount block 0.
    pos = l2_entry_pos(img, header(img)["l1"], 0)
    rb = refblock0(img)
    poke(img, pos, rb | (1 << 63))
    before = open(img, "rb").read()
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        _, out = bt.cmd("write 0 512 4096", check=False)
        assert out.startswith("error: node 'disk0': Preventing invalid write on metadata (the "
                              f"data write of 512 bytes at {rb:#x} would overwrite a refcount "
                              f"block at {rb:#x})"), out
        assert "repair it with 'qemu-img check -r all'" in out
        _, out = bt.cmd("write 1048576 512 0", check=False)  # no more writes at all
        assert "marked corrupt" in out or "refuses writes" in out, out
    after = open(img, "rb").read()
    assert after[:72] == before[:72] and after[80:] == before[80:], "refused writes changed it"
    assert_corrupt_marked(img)


def test_l2_entry_at_2_40_is_refused_without_growing_the_file(tmp_path, pool):
    img = make(tmp_path, pool)
    poke(img, l2_entry_pos(img, first_snapshot_l1(img), 65536), (1 << 40) | 0)
    poke(img, l2_entry_pos(img, header(img)["l1"], 65536), (1 << 40) | (1 << 63))
    size = os.path.getsize(img)
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        _, out = bt.cmd("read 65536 4096", check=False)
        assert out == ("error: node 'disk0': a data cluster at 0x10000000000 lies beyond the "
                       f"end of the image file ({size} bytes): the image is corrupt; repair it "
                       "with 'qemu-img check -r all'"), out
        bt.ok("read 0 4096")  # the rest of the disk reads
        # A goto to s1 as the disk still is would have nothing to do (block.h):
        # a write elsewhere first, so that it must raise the refcount at 2^40.
        bt.ok("write 0 4096 0")
        _, out = bt.cmd("snap-goto s1", check=False)
        assert "a data cluster at 0x10000000000 lies beyond the end of the image file" in out, out
        _, out = bt.cmd("write 65536 512 0", check=False)
        assert "lies beyond the end of the image file" in out, out
    assert os.path.getsize(img) < 4 * MiB, "the file grew towards 2^40"
    data, _ = Blocktool(blockdev_qcow2(img, extra="read-only=on")).cmd("snap-list")
    assert len(data) == 1


def test_vmstate_extent_at_2_40_is_refused(tmp_path, pool):
    img = make(tmp_path, pool, with_vmstate=True)
    # The vmstate starts at the first L2 boundary past the 32 MiB disk: 512 MiB.
    poke(img, l2_entry_pos(img, first_snapshot_l1(img), 512 * MiB + 65536), 1 << 40)
    with Blocktool(blockdev_qcow2(img)) as bt:
        _, out = bt.cmd("snap-vmmap s1 0 200000", check=False)
        assert "a data cluster at 0x10000000000 lies beyond the end of the image file" in out, out
        _, out = bt.cmd("snap-vmread s1 65536 4096", check=False)
        assert "a data cluster at 0x10000000000 lies beyond the end of the image file" in out, out
        bt.ok("snap-vmread s1 0 4096")


def test_refcount_zero_on_an_l2_table_is_not_reused(tmp_path, pool):
    img = make(tmp_path, pool)
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 0 4096 0")  # the active L2 table is now unshared, refcount 1
    l2 = l2_entry_pos(img, header(img)["l1"], 0)  # entry 0: its offset is the table's
    rb = refblock0(img)
    poke_pos = rb + (l2 // CL) * 2  # 16-bit refcounts
    with open(img, "r+b") as f:
        f.seek(poke_pos)
        f.write(b"\0\0")
    before = open(img, "rb").read()
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        _, out = bt.cmd("write 8388608 65536 0", check=False)  # needs new clusters
        assert out.startswith(f"error: node 'disk0': cluster {l2:#x} has refcount 0 but holds "
                              "an active L2 table (image corrupt; repair it with 'qemu-img "
                              "check -r all')"), out
    after = open(img, "rb").read()
    assert after[:72] == before[:72] and after[80:] == before[80:]
    assert_corrupt_marked(img)
