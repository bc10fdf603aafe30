"""qcow2 guest I/O through snapvm's block layer, with qemu-img/qemu-io as the
oracle: images in every supported geometry are made by qemu-img, filled by
qemu-io, read and written by blocktool, then read back and checked by
qemu-img."""
import os
import random
import shutil
import subprocess

import pytest

from test_block_lib import (Blocktool, BlockError, blockdev_qcow2, crc, qemu_img,
                            qemu_img_check, read_raw_via_qemu, run_blocktool)

MiB = 1 << 20

GEOMETRIES = {
    "v2-64k": ["-o", "compat=0.10"],
    "v3-512": ["-o", "cluster_size=512"],
    "v3-4k": ["-o", "cluster_size=4096"],
    "v3-64k": [],
    "v3-2m": ["-o", "cluster_size=2M"],
    "refcount1": ["-o", "refcount_bits=1,cluster_size=4096"],
    "refcount64": ["-o", "refcount_bits=64,cluster_size=4096"],
    "refcount2-512": ["-o", "refcount_bits=2,cluster_size=512"],
    "lazy": ["-o", "lazy_refcounts=on"],
    "prealloc-metadata": ["-o", "preallocation=metadata,cluster_size=4096"],
    "prealloc-falloc": ["-o", "preallocation=falloc"],
}

HAVE_QEMU_IO = shutil.which("qemu-io") is not None


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    p = tmp_path_factory.mktemp("pool") / "pool.bin"
    p.write_bytes(random.Random(1).randbytes(8 * MiB))
    return str(p)


def qemu_io(img, *cmds, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    subprocess.run(args + [img], check=True, capture_output=True)


def fill_with_qemu(img, size):
    """Put recognisable data, zeroes and holes in an image, written by QEMU."""
    if HAVE_QEMU_IO:
        qemu_io(img, f"write -P 0x5a 0 {size // 4}", f"write -P 0xc3 {size // 2} 12345",
                f"write -z {size // 8} {size // 16}", f"write -P 0x11 {size - 4096} 4096")
    else:
        raw = img + ".src"
        with open(raw, "wb") as f:
            f.write(bytes([0x5A]) * (size // 4))
        qemu_img("dd", "-f", "raw", "-O", "qcow2", f"if={raw}", f"of={img}", "conv=notrunc")


def random_writes(bt, model, rng, n, pool_len, max_len=300000):
    size = len(model)
    with open(bt_pool_path[0], "rb") as f:
        pool = f.read()
    for _ in range(n):
        length = rng.randint(1, min(max_len, size))
        off = rng.randrange(0, size - length + 1)
        poff = rng.randrange(0, pool_len - length)
        bt.ok(f"write {off} {length} {poff}")
        model[off:off + length] = pool[poff:poff + length]


bt_pool_path = [None]


@pytest.mark.parametrize("geom", sorted(GEOMETRIES))
def test_read_what_qemu_wrote_then_write(tmp_path, pool, geom):
    bt_pool_path[0] = pool
    size = 8 * MiB if geom == "v3-2m" else 3 * MiB
    img = str(tmp_path / "t.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", *GEOMETRIES[geom], img, str(size))
    fill_with_qemu(img, size)
    expect = bytearray(read_raw_via_qemu(img, tmp_path))
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok(f"dump {tmp_path / 'ours.raw'}")
        assert (tmp_path / "ours.raw").read_bytes() == expect
        random_writes(bt, expect, random.Random(geom), 40, 8 * MiB)
        assert bt.crc(f"read 0 {size}") == crc(expect)
    assert read_raw_via_qemu(img, tmp_path) == expect
    qemu_img_check(img)


@pytest.mark.parametrize("backing_fmt", ["qcow2", "raw"])
def test_backing_file(tmp_path, pool, backing_fmt):
    bt_pool_path[0] = pool
    size = 2 * MiB
    base = str(tmp_path / f"base.{backing_fmt}")
    qemu_img("create", "-q", "-f", backing_fmt, base, str(size))
    if HAVE_QEMU_IO:
        qemu_io(base, "write -P 0x77 0 1M", "write -P 0x99 1536k 300k", fmt=backing_fmt)
    base_before = open(base, "rb").read()
    img = str(tmp_path / "over.qcow2")
    # A relative backing name: resolved against the overlay's directory.
    qemu_img("create", "-q", "-f", "qcow2", "-b", os.path.basename(base), "-F", backing_fmt,
             "-o", "cluster_size=4096", img)
    expect = bytearray(read_raw_via_qemu(img, tmp_path))
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        assert bt.crc(f"read 0 {size}") == crc(expect)
        random_writes(bt, expect, random.Random(7), 30, 8 * MiB, max_len=20000)
        assert bt.crc(f"read 0 {size}") == crc(expect)
    assert read_raw_via_qemu(img, tmp_path) == expect
    qemu_img_check(img)
    # The backing file was not touched.
    assert open(base, "rb").read() == base_before


def test_backing_opened_read_only_and_null_backing(tmp_path):
    base = str(tmp_path / "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "1M")
    if HAVE_QEMU_IO:
        qemu_io(base, "write -P 0x42 0 64k")
    img = str(tmp_path / "over.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", img)
    r = run_blocktool("--blockdev", blockdev_qcow2(img), "-c", "read 0 65536")
    assert r.returncode == 0
    assert int(r.stdout.split("crc=")[1], 16) == crc(b"\x42" * 65536)
    r = run_blocktool("--blockdev", blockdev_qcow2(img, extra="backing=null"), "-c",
                      "read 0 65536")
    # keyval gives the string "null"; only the JSON form has a real null
    r = run_blocktool("--blockdev",
                      '{"driver":"qcow2","node-name":"d","backing":null,'
                      f'"file":{{"driver":"file","filename":"{img}"}}}}', "-c", "read 0 65536")
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split("crc=")[1], 16) == crc(bytes(65536))
    os.unlink(base)
    r = run_blocktool("--blockdev", blockdev_qcow2(img), "-c", "info")
    assert r.returncode != 0 and "base.qcow2" in r.stderr


@pytest.mark.parametrize("ctype", ["zlib", "zstd"])
@pytest.mark.parametrize("cluster", ["4096", "65536"])
def test_compressed_clusters(tmp_path, pool, ctype, cluster):
    bt_pool_path[0] = pool
    size = 2 * MiB
    src = tmp_path / "src.raw"
    rng = random.Random(3)
    # Compressible data: runs of repeated random bytes.
    data = b"".join(bytes([rng.randrange(256)]) * rng.randrange(1, 3000) for _ in range(1500))
    src.write_bytes(data[:size].ljust(size, b"\0"))
    img = str(tmp_path / "c.qcow2")
    qemu_img("convert", "-c", "-O", "qcow2", "-o",
             f"compression_type={ctype},cluster_size={cluster}", str(src), img)
    assert "compressed" in qemu_img("check", img).stdout
    expect = bytearray(src.read_bytes())
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok(f"dump {tmp_path / 'ours.raw'}")
        assert (tmp_path / "ours.raw").read_bytes() == expect
        # Partial writes into compressed clusters copy them out first.
        random_writes(bt, expect, random.Random(11), 25, 8 * MiB, max_len=10000)
        assert bt.crc(f"read 0 {size}") == crc(expect)
    assert read_raw_via_qemu(img, tmp_path) == expect
    qemu_img_check(img)


@pytest.mark.skipif(not HAVE_QEMU_IO, reason="needs qemu-io to make zero clusters")
def test_zero_clusters(tmp_path, pool):
    bt_pool_path[0] = pool
    img = str(tmp_path / "z.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "1M")
    qemu_io(img, "write -P 0xee 0 1M", "write -z 64k 64k", "write -z -u 256k 64k")
    expect = bytearray(read_raw_via_qemu(img, tmp_path))
    assert expect[65536:131072] == bytes(65536)
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        assert bt.crc("read 0 1048576") == crc(expect)
        for off in (65536 + 100, 262144 + 5000, 70000):
            bt.ok(f"write {off} 3000 {off}")
            expect[off:off + 3000] = open(pool, "rb").read()[off:off + 3000]
        assert bt.crc("read 0 1048576") == crc(expect)
    assert read_raw_via_qemu(img, tmp_path) == expect
    qemu_img_check(img)


def test_refcount_table_growth(tmp_path, pool):
    """512-byte clusters fill the first refcount table quickly: it must grow."""
    img = str(tmp_path / "g.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "12M")
    data = open(pool, "rb").read()
    with Blocktool(blockdev_qcow2(img, extra="cache.no-flush=on"), pool=pool) as bt:
        bt.ok(f"write 0 {8 * MiB} 0")
        bt.ok(f"write {8 * MiB} {4 * MiB} 0")
    qemu_img_check(img)
    assert read_raw_via_qemu(img, tmp_path) == data + data[:4 * MiB]


def test_not_qcow2_and_bad_options(tmp_path):
    raw = tmp_path / "x.raw"
    raw.write_bytes(b"hello" * 1000)
    r = run_blocktool("--blockdev", blockdev_qcow2(raw), "-c", "info")
    assert r.returncode != 0
    assert "node 'disk0'" in r.stderr and "x.raw" in r.stderr and "not a qcow2 image" in r.stderr
    img = str(tmp_path / "a.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    r = run_blocktool("--blockdev", blockdev_qcow2(img, extra="bogus=1"), "-c", "info")
    assert "unknown option 'bogus'" in r.stderr
    r = run_blocktool("--blockdev", blockdev_qcow2(img), "-c", "read 1048570 10")
    assert "beyond the end" in r.stdout


def test_read_only_node_refuses_writes(tmp_path):
    img = str(tmp_path / "a.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    r = run_blocktool("--blockdev", blockdev_qcow2(img, extra="read-only=on"), "-c",
                      "fill 0 512 1", "-c", "snap-create x")
    assert r.stdout.count("read-only") == 2
    qemu_img_check(img)


def test_preserves_unknown_header_extension(tmp_path):
    img = str(tmp_path / "a.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    with open(img, "r+b") as f:
        head = bytearray(f.read(4096))
        hlen = int.from_bytes(head[100:104], "big")
        # Find the end of the extension list and append an unknown one.
        p = hlen
        while int.from_bytes(head[p:p + 4], "big") != 0:
            p += 8 + (int.from_bytes(head[p + 4:p + 8], "big") + 7) // 8 * 8
        ext = (0x12345678).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"snap!\0\0\0"
        head[p:p + len(ext)] = ext
        f.seek(0)
        f.write(head)
    before = open(img, "rb").read(4096)
    r = run_blocktool("--blockdev", blockdev_qcow2(img), "-c", "fill 0 70000 9", "-c",
                      "snap-create s", "-c", "fill 0 100 1", "-c", "snap-delete s")
    assert r.returncode == 0, r.stdout + r.stderr
    after = open(img, "rb").read(4096)
    # Header fields changed (tables moved), but the extension area is intact.
    assert after[hlen:p + len(ext)] == before[hlen:p + len(ext)]
    qemu_img_check(img)


@pytest.mark.skipif(not HAVE_QEMU_IO, reason="needs qemu-io to leave a dirty image")
def test_dirty_lazy_refcount_image_is_repaired(tmp_path, pool):
    """QEMU killed while using lazy refcounts leaves stale refcounts and the
    dirty bit; snapvm rebuilds the refcounts when it opens the image for writing."""
    img = str(tmp_path / "lazy.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img, "4M")
    qemu_img("snapshot", "-c", "before", img)
    subprocess.run(["qemu-io", "-c", "write -P 0x33 0 1M", "-c", "write -P 0x44 2M 64k", "-c",
                    "abort", img], capture_output=True)
    r = qemu_img("check", img, check=False)
    assert r.returncode != 0  # QEMU left it inconsistent
    expect = bytearray(b"\x33" * MiB + bytes(MiB) + b"\x44" * 65536 + bytes(2 * MiB - 65536))
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        assert bt.crc(f"read 0 {4 * MiB}") == crc(expect)
        bt.ok("write 5000 70000 0")
        expect[5000:75000] = open(pool, "rb").read()[:70000]
        bt.ok("snap-create after")
        bt.ok("snap-goto before")
        assert bt.crc(f"read 0 {4 * MiB}") == crc(bytes(4 * MiB))
        bt.ok("snap-goto after")
    qemu_img_check(img)
    assert read_raw_via_qemu(img, tmp_path) == expect


def test_unsupported_features_are_named(tmp_path):
    ext = str(tmp_path / "ext.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "extended_l2=on", ext, "1M")
    r = run_blocktool("--blockdev", blockdev_qcow2(ext), "-c", "info")
    assert r.returncode != 0 and "extended L2 entries" in r.stderr and "ext.qcow2" in r.stderr
    data = str(tmp_path / "data.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", data,
             "1M")
    r = run_blocktool("--blockdev", blockdev_qcow2(data), "-c", "info")
    assert r.returncode != 0 and "external data file" in r.stderr


def test_persistent_bitmaps_are_not_silently_invalidated(tmp_path):
    img = str(tmp_path / "bm.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    qemu_img("bitmap", "--add", img, "b0")
    r = run_blocktool("--blockdev", blockdev_qcow2(img), "-c", "fill 0 4096 1")
    assert r.returncode != 0 and "persistent dirty bitmaps" in r.stderr and "bm.qcow2" in r.stderr
    r = run_blocktool("--blockdev", blockdev_qcow2(img, extra="read-only=on"), "-c", "read 0 4096")
    assert r.returncode == 0, r.stderr
    # QEMU still trusts its bitmap afterwards.
    assert "inconsistent" not in qemu_img("info", img).stderr
    qemu_img_check(img)
