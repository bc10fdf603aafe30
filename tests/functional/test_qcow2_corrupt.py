"""Corrupt, truncated and hostile qcow2 images: snapvm must answer with a
clear error that names the file, and must never crash (the block layer runs
inside the VMM process), whatever it is asked to do with the image."""
import os
import random
import shutil
import signal
import subprocess

import pytest

from test_block_lib import BLOCKTOOL, blockdev_qcow2, qemu_img

MiB = 1 << 20
OPS = ["info", "read 0 65536", "snap-list", "snap-vmread s1 0 4096", "read 1000000 48576",
       "fill 5000 70000 7", "snap-create new", "snap-goto s1", "snap-delete s1",
       "vm-write 0 5000 0", "vm-discard"]


@pytest.fixture(scope="module")
def good_image(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    src = d / "src.raw"
    src.write_bytes(bytes(range(256)) * 4096)
    img = str(d / "good.qcow2")
    qemu_img("convert", "-c", "-O", "qcow2", "-o", "cluster_size=4096", str(src), img)
    pool = d / "pool.bin"
    pool.write_bytes(os.urandom(65536))
    r = subprocess.run([BLOCKTOOL, "--pool", str(pool), "--blockdev", blockdev_qcow2(img),
                        "-c", "fill 0 70000 3", "-c", "vm-write 0 20000 0", "-c",
                        "snap-create s1", "-c", "fill 100000 9000 4"],
                       capture_output=True, text=True, errors="replace")
    assert r.returncode == 0, r.stdout + r.stderr
    return img


def run_ops(img, ops=OPS, read_only=False):
    """Open img and run ops one process each; fail the test on any crash."""
    extra = "read-only=on" if read_only else ""
    outs = []
    for op in ops:
        r = subprocess.run([BLOCKTOOL, "--blockdev", blockdev_qcow2(img, extra=extra), "-c", op],
                           capture_output=True, text=True, errors="replace", timeout=20)
        assert r.returncode in (0, 1), f"'{op}' crashed ({r.returncode}): {r.stderr}"
        outs.append(r.stdout + r.stderr)
    return outs


def patch(src, dst, offset, data):
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return str(dst)


def be(n, width):
    return n.to_bytes(width, "big")


HEADER_CASES = [
    # (name, offset, bytes, expected message)
    ("magic", 0, b"QFI\x00", "not a qcow2 image"),
    ("version1", 4, be(1, 4), "unsupported qcow2 version 1"),
    ("version4", 4, be(4, 4), "unsupported qcow2 version 4"),
    ("cluster_bits_small", 20, be(8, 4), "cluster_bits 8"),
    ("cluster_bits_big", 20, be(22, 4), "cluster_bits 22"),
    ("cluster_bits_huge", 20, be(200, 4), "cluster_bits 200"),
    ("size_huge", 24, be(1 << 63, 8), "does not fit the disk size"),
    ("encrypted", 32, be(1, 4), "encrypted"),
    ("l1_size_small", 36, be(0, 4), "does not fit the disk size"),
    ("l1_size_huge", 36, be(0xFFFFFFFF, 4), "does not fit the disk size"),
    ("l1_unaligned", 40, be(4096 * 3 + 8, 8), "L1 table offset"),
    ("l1_beyond_eof", 40, be(1 << 40, 8), "L1 table offset"),
    ("reftable_zero", 48, be(0, 8), "refcount table"),
    ("reftable_beyond", 48, be(1 << 45, 8), "refcount table"),
    ("reftable_clusters_0", 56, be(0, 4), "refcount table"),
    ("reftable_clusters_huge", 56, be(0x7FFFFFFF, 4), "refcount table"),
    ("nb_snapshots_huge", 60, be(0x7FFFFFFF, 4), "snapshot table"),
    ("snapshots_beyond", 64, be(1 << 40, 8), "snapshot table"),
    ("incompat_unknown", 72, be(1 << 40, 8), "unsupported incompatible feature"),
    ("incompat_extl2", 72, be(1 << 4, 8), "extended L2 entries"),
    ("incompat_datafile", 72, be(1 << 2, 8), "external data file"),
    ("incompat_compression", 72, be(1 << 3, 8), "compression type"),
    ("refcount_order", 96, be(7, 4), "refcount_order 7"),
    ("header_length_odd", 100, be(105, 4), "header_length"),
    ("header_length_huge", 100, be(1 << 20, 4), "header_length"),
    ("ext_overflow", 112, be(0x6803F857, 4) + be(0xFFFFFF00, 4), "header extension"),
]


@pytest.mark.parametrize("case", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_bad_header_fields(tmp_path, good_image, case):
    name, off, data, msg = case
    img = patch(good_image, tmp_path / f"{name}.qcow2", off, data)
    outs = run_ops(img, ops=["info"])
    assert msg in outs[0], outs[0]
    assert os.path.basename(img) in outs[0] or "node 'disk0'" in outs[0]


def test_dirty_bit_is_repaired(tmp_path, good_image):
    img = patch(good_image, tmp_path / "dirty.qcow2", 72, be(1, 8))
    out = run_ops(img, ops=["read 0 4096"], read_only=True)[0]
    assert out.startswith("ok crc=")
    with open(img, "rb") as f:  # a read-only open leaves the image as it is
        f.seek(72)
        assert int.from_bytes(f.read(8), "big") & 1 == 1
    out = run_ops(img, ops=["fill 0 10 1"])[0]
    assert "rebuilding its refcounts" in out
    with open(img, "rb") as f:
        f.seek(72)
        assert int.from_bytes(f.read(8), "big") & 1 == 0
    r = qemu_img("check", img, check=False)
    assert r.returncode == 0 and "No errors" in r.stdout, r.stdout


@pytest.mark.parametrize("length", [0, 10, 71, 100, 4096, 12288, 20000, 40000, 60000])
def test_truncated(tmp_path, good_image, length):
    img = str(tmp_path / "t.qcow2")
    shutil.copy(good_image, img)
    os.truncate(img, length)
    outs = run_ops(img)
    if length < 4096:
        assert "not a qcow2 image" in outs[0] or "truncated" in outs[0], outs[0]


def table_offsets(img):
    with open(img, "rb") as f:
        h = f.read(72)
    return {"l1": int.from_bytes(h[40:48], "big"), "reftable": int.from_bytes(h[48:56], "big"),
            "snapshots": int.from_bytes(h[64:72], "big")}


WRITE_OPS = {"fill 5000 70000 7", "snap-create new", "snap-goto s1", "snap-delete s1",
             "vm-write 0 5000 0", "vm-discard"}


def without_incompat(data):
    """The image bytes with the incompatible-features field blanked."""
    return data[:72] + bytes(8) + data[80:]


# (table, bytes written at its start, message every op must give, or None if only
#  writes fail: then the first write is refused with write_msg and marks the image corrupt)
BAD_TABLES = [
    ("l1", be(1 << 50, 8), "L1 entry 0 points to an L2 table at 0x4000000000000 outside the file",
     None),
    # An L1 entry pointing into the refcount table: reads go on, the first write is refused.
    ("l1", be(4096 + 17, 8), None,
     "Preventing invalid write on metadata (the metadata write of"),
    ("reftable", be(1 << 50, 8), "refcount block 0 at 0x4000000000000 is out of range of the file",
     None),
    # No refcount block 0: the block would have to go into cluster 0, the header.
    ("reftable", be(0, 8), None, "refcount block 0 is missing but its clusters hold the image header"),
    ("snapshots", b"\xff" * 16, "snapshot 0: snapshot table runs past the end of the file", None),
    ("snapshots", be(0, 8) + be(1 << 30, 4),
     "snapshot 0: snapshot 's1' has an invalid L1 table (offset 0, 1073741824 entries)", None),
]


@pytest.mark.parametrize("what,entry,msg,write_msg", BAD_TABLES)
def test_bad_table_entries(tmp_path, good_image, what, entry, msg, write_msg):
    off = table_offsets(good_image)[what]
    img = patch(good_image, tmp_path / f"{what}.qcow2", off, entry)
    before = open(img, "rb").read()
    outs = run_ops(img)
    for op, out in zip(OPS, outs):
        if msg:
            # Refused at open, naming the node and the bad entry.
            assert out.startswith(f"error: node 'disk0': {msg}"), (op, out)
        elif op not in WRITE_OPS:
            assert out.startswith("ok") or out.startswith("snap ") or \
                "beyond the vmstate" in out or "lies beyond the end" in out, (op, out)
    after = open(img, "rb").read()
    if msg:
        assert after == before, "a refused image was changed"
        return
    # The first write is refused, names what it would have overwritten, and marks the
    # image corrupt (incompatible bit 1, as QEMU does); later writable opens are refused
    # with the repair command; nothing else in the image changed.
    first = [o for op, o in zip(OPS, outs) if op in WRITE_OPS][0]
    assert write_msg in first and "marked corrupt" in first and \
        "qemu-img check -r all" in first, first
    for op, out in zip(OPS, outs):
        if op in WRITE_OPS and out is not first:
            assert "is marked corrupt; open it read-only or repair it with 'qemu-img check " \
                "-r all'" in out, (op, out)
    assert int.from_bytes(after[72:80], "big") & 2, "the corrupt bit is not set"
    assert without_incompat(after) == without_incompat(before), "refused writes changed the image"
    assert '"corrupt": true' in qemu_img("info", "--output=json", img).stdout
    # Read-only opens still work.
    ro = run_ops(img, ops=["read 0 65536"], read_only=True)[0]
    assert ro.startswith("ok crc="), ro


def l2_entry(img, guest_off):
    """The raw L2 entry of a guest offset (4 KiB clusters, as good_image has)."""
    with open(img, "rb") as f:
        h = f.read(104)
        l1_off = int.from_bytes(h[40:48], "big")
        f.seek(l1_off + (guest_off >> 21) * 8)
        l2_off = int.from_bytes(f.read(8), "big") & 0x00fffffffffffe00
        f.seek(l2_off + ((guest_off >> 12) & 511) * 8)
        return l2_off + ((guest_off >> 12) & 511) * 8, int.from_bytes(f.read(8), "big")


def test_corrupt_compressed_data(tmp_path, good_image):
    # Garble exactly one compressed cluster (guest offset 196608, untouched since the
    # compressing convert): reading it fails with an error that names the node and the
    # cluster; nothing is written.
    _, e = l2_entry(good_image, 196608)
    assert e & (1 << 62), "guest cluster 48 is not compressed"
    host = e & ((1 << 58) - 1)
    img = patch(good_image, tmp_path / "c.qcow2", host, b"\xa5" * 64)
    before = open(img, "rb").read()
    r = subprocess.run([BLOCKTOOL, "--blockdev", blockdev_qcow2(img), "-c", "read 196608 4096"],
                       capture_output=True, text=True, errors="replace")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith(f"error: node 'disk0': the deflate-compressed cluster at "
                               f"{host:#x} is corrupt"), r.stdout
    # The clusters around it still read.
    r = subprocess.run([BLOCKTOOL, "--blockdev", blockdev_qcow2(img), "-c", "read 192512 4096",
                        "-c", "read 200704 4096"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("ok crc=") == 2, r.stdout
    assert open(img, "rb").read() == before


def test_random_byte_flips(tmp_path, good_image):
    """A few hundred randomly damaged images: errors are fine, crashes are not."""
    rng = random.Random(5)
    data = open(good_image, "rb").read()
    t = table_offsets(good_image)
    hot = [0, t["l1"], t["reftable"], t["snapshots"]]
    img = str(tmp_path / "f.qcow2")
    for i in range(150):
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            base = rng.choice(hot)
            pos = base + rng.randrange(0, 512) if rng.random() < 0.8 else rng.randrange(len(b))
            b[pos] = rng.randrange(256)
        with open(img, "wb") as f:
            f.write(b)
        r = subprocess.run([BLOCKTOOL, "--blockdev", blockdev_qcow2(img), "-c", "read 0 1048576",
                            "-c", "snap-list", "-c", "snap-vmread s1 0 20000", "-c",
                            "fill 3000 9000 1", "-c", "snap-create n", "-c", "snap-goto s1",
                            "-c", "snap-delete n"], capture_output=True, text=True, errors="replace", timeout=20)
        assert r.returncode in (0, 1), f"iteration {i} crashed ({r.returncode}): {r.stderr}"
