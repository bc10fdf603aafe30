"""Internal snapshots at block level: snapvm's snapshots as qemu-img sees
them, QEMU's snapshots as snapvm sees them, vmstate storage, and a clean
`qemu-img check` after every step."""
import itertools
import json
import os
import random
import shutil
import subprocess

import pytest

from test_block_lib import (Blocktool, BlockError, blockdev_qcow2, crc, qemu_img,
                            qemu_img_check, read_raw_via_qemu)

MiB = 1 << 20


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    p = tmp_path_factory.mktemp("pool") / "pool.bin"
    p.write_bytes(random.Random(2).randbytes(4 * MiB))
    return str(p)


def pool_bytes(pool, off, n):
    with open(pool, "rb") as f:
        f.seek(off)
        return f.read(n)


def snapshots_json(img):
    info = json.loads(qemu_img("info", "--output=json", "-U", img).stdout)
    return {s["name"]: s for s in info.get("snapshots", [])}


def snapshot_list_text(img):
    """qemu-img snapshot -l rows as {tag: (vm_size, date, vm_clock)}."""
    rows = {}
    for line in qemu_img("snapshot", "-l", img).stdout.splitlines()[2:]:
        parts = line.split()
        # ID TAG VMSIZE(2 words) DATE(2 words) VMCLOCK
        rows[parts[1]] = (" ".join(parts[2:4]), " ".join(parts[4:6]), parts[6])
    return rows


def test_snapvm_snapshots_in_qemu_img(tmp_path, pool):
    img = str(tmp_path / "s.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "4M")
    vm_len = 1536 * 1024 + 7  # not a multiple of the cluster size
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 0 100000 0")
        bt.ok(f"vm-write 0 {vm_len} 1000")
        assert bt.crc(f"vm-read 0 {vm_len}") == crc(pool_bytes(pool, 1000, vm_len))
        # 1 h 2 min 3.456 s of guest time; a fixed date.
        clock = ((1 * 60 + 2) * 60 + 3) * 10**9 + 456 * 10**6
        assert bt.ok(f"snap-create first {clock} 1700000000") == "ok id=1"
        bt.ok("write 50000 100000 200000")
        assert bt.ok("snap-create second 5000000000") == "ok id=2"
        data, _ = bt.cmd("snap-list")
        assert len(data) == 2 and "vmsize=0" in data[1]
        # The vmstate went to the snapshot; the active image has none now.
        assert bt.crc(f"vm-read 0 {vm_len}") == crc(bytes(vm_len))
        assert bt.crc(f"snap-vmread first 0 {vm_len}") == crc(pool_bytes(pool, 1000, vm_len))
        assert bt.crc("snap-vmread 1 4096 100") == crc(pool_bytes(pool, 1000 + 4096, 100))
        with pytest.raises(BlockError, match="beyond the vmstate"):
            bt.ok(f"snap-vmread first 0 {vm_len + 1}")
    qemu_img_check(img)
    js = snapshots_json(img)
    assert js["first"]["vm-state-size"] == vm_len
    assert js["first"]["date-sec"] == 1700000000
    assert js["first"]["vm-clock-sec"] == 3723 and js["first"]["vm-clock-nsec"] == 456 * 10**6
    assert js["second"]["vm-state-size"] == 0
    text = snapshot_list_text(img)
    assert text["first"][0] == "1.5 MiB"
    assert text["first"][2] == "01:02:03.456"
    assert text["second"][2] == "00:00:05.000"
    import time
    assert text["first"][1] == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1700000000))


def test_qemu_img_applies_snapvm_snapshot(tmp_path, pool):
    img = str(tmp_path / "s.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "2M")
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 0 300000 0")
        bt.ok("snap-create s1")
        bt.ok("write 100000 300000 777777")
    after = read_raw_via_qemu(img, tmp_path)
    qemu_img("snapshot", "-a", "s1", img)
    qemu_img_check(img)
    expect = pool_bytes(pool, 0, 300000) + bytes(2 * MiB - 300000)
    assert read_raw_via_qemu(img, tmp_path) == expect
    assert after != expect


def test_snapvm_uses_qemu_img_snapshots(tmp_path, pool):
    img = str(tmp_path / "q.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "2M")
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 0 500000 0")
    v1 = read_raw_via_qemu(img, tmp_path)
    qemu_img("snapshot", "-c", "q1", img)
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 1000 5000 900000")
    v2 = read_raw_via_qemu(img, tmp_path)
    qemu_img("snapshot", "-c", "q2", img)
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        data, _ = bt.cmd("snap-list")
        assert [d.split()[2] for d in data] == ["name=q1", "name=q2"]
        bt.ok("snap-goto q1")
        assert bt.crc("read 0 2097152") == crc(v1)
        bt.ok("snap-goto 2")  # by id
        assert bt.crc("read 0 2097152") == crc(v2)
        bt.ok("snap-delete q2")
        with pytest.raises(BlockError, match="no snapshot 'q2'"):
            bt.ok("snap-goto q2")
    qemu_img_check(img)
    assert read_raw_via_qemu(img, tmp_path) == v2
    assert list(snapshots_json(img)) == ["q1"]
    qemu_img("snapshot", "-a", "q1", img)
    assert read_raw_via_qemu(img, tmp_path) == v1


def savevm_with_qemu(img, tag, machine="none"):
    args = ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-monitor", "stdio",
            "-blockdev", f"driver=qcow2,node-name=d,file.driver=file,file.filename={img}"]
    args += ["-machine", "none"] if machine == "none" else ["-m", "16"]
    r = subprocess.run(args, input=f"savevm {tag}\nquit\n", capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_qemu_savevm_snapshot_with_vmstate(tmp_path, pool):
    img = str(tmp_path / "v.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "4M")
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 0 70000 0")
    savevm_with_qemu(img, "qemu1", machine="pc")
    size = snapshots_json(img)["qemu1"]["vm-state-size"]
    assert size > 100000
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        data, _ = bt.cmd("snap-list")
        assert f"vmsize={size}" in data[0]
        # QEMU's vmstate starts with its file magic "QEVM".
        assert bt.crc("snap-vmread qemu1 0 4") == crc(b"QEVM")
        bt.ok("write 0 10 500")
        bt.ok("snap-goto qemu1")
        assert bt.crc("read 0 70000") == crc(pool_bytes(pool, 0, 70000))
        bt.ok("snap-create mine")
        bt.ok("snap-delete qemu1")
    qemu_img_check(img)
    assert list(snapshots_json(img)) == ["mine"]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_delete_in_every_order(tmp_path, pool, order):
    img = str(tmp_path / "d.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "1M")
    contents = []
    with Blocktool(blockdev_qcow2(img, extra="cache.no-flush=on"), pool=pool) as bt:
        for i in range(3):
            bt.ok(f"write {i * 100000} 300000 {i * 1000}")
            bt.ok(f"vm-write 0 {20000 + i} {i * 33}")
            bt.ok(f"snap-create s{i}")
            _, final = bt.cmd("read 0 1048576")
            contents.append(final)
        bt.ok("write 0 4096 3")
    qemu_img_check(img)
    for n, i in enumerate(order):
        with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
            for j in order[n:]:
                assert bt.crc(f"snap-vmread s{j} 0 {20000 + j}") == crc(
                    pool_bytes(pool, j * 33, 20000 + j))
            bt.ok(f"snap-delete s{i}")
            for j in order[n + 1:]:
                bt.ok(f"snap-goto s{j}")
                assert bt.cmd("read 0 1048576")[1] == contents[j]
        qemu_img_check(img)
    assert snapshots_json(img) == {}


def test_vmstate_discard_and_map(tmp_path, pool):
    img = str(tmp_path / "m.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "1M")
    n = 64 * 4096 + 100
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok(f"vm-write 0 {n} 0")
        bt.ok("vm-discard")
        assert bt.crc(f"vm-read 0 {n}") == crc(bytes(n))
    qemu_img_check(img)  # a discarded vmstate leaks nothing
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok(f"vm-write 0 {n} 0")
        bt.ok(f"vm-write {8 * 4096} 4096 99")  # rewrite one page in place
        bt.ok("snap-create withvm")
        ext, final = bt.cmd(f"snap-vmmap withvm 0 {n}")
        assert final.endswith("fd=1")
    expect = bytearray(pool_bytes(pool, 0, n))
    expect[8 * 4096:9 * 4096] = pool_bytes(pool, 99, 4096)
    covered = 0
    with open(img, "rb") as f:
        for line in ext:
            _, pos, length, kind, host = line.split()
            pos, length, host = int(pos), int(length), int(host)
            assert pos == covered
            covered += length
            assert kind == "data"
            f.seek(host)
            assert f.read(length) == expect[pos:pos + length]
    assert covered == n
    qemu_img_check(img)


def test_refcount_bits_1_refuses_snapshots(tmp_path):
    img = str(tmp_path / "r.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", img, "1M")
    with Blocktool(blockdev_qcow2(img)) as bt:
        bt.ok("fill 0 100000 7")
        with pytest.raises(BlockError, match="refcount_bits=1"):
            bt.ok("snap-create s")
    qemu_img_check(img)


def test_refcount_overflow_is_undone(tmp_path):
    """2-bit refcounts hold 3 references: the third snapshot must fail cleanly."""
    img = str(tmp_path / "r2.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "refcount_bits=2,cluster_size=4096", img, "1M")
    with Blocktool(blockdev_qcow2(img)) as bt:
        bt.ok("fill 0 100000 7")
        bt.ok("snap-create a")
        bt.ok("snap-create b")
        with pytest.raises(BlockError, match="exceed the maximum"):
            bt.ok("snap-create c")
        bt.ok("fill 0 5000 8")
    qemu_img_check(img)
    assert sorted(snapshots_json(img)) == ["a", "b"]


def test_freed_clusters_are_reused(tmp_path, pool):
    img = str(tmp_path / "f.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "2M")
    with Blocktool(blockdev_qcow2(img, extra="cache.no-flush=on"), pool=pool) as bt:
        bt.ok("write 0 2097152 0")
        bt.ok("snap-create a")
        bt.ok("write 0 2097152 1")
        bt.ok("snap-delete a")
        size1 = os.path.getsize(img)
        for i in range(5):
            bt.ok(f"snap-create b{i}")
            bt.ok(f"write 0 2097152 {i + 2}")
            bt.ok(f"snap-delete b{i}")
        size2 = os.path.getsize(img)
    assert size2 <= size1 + 64 * 1024, (size1, size2)
    qemu_img_check(img)


def test_duplicate_and_missing_names(tmp_path):
    img = str(tmp_path / "n.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    with Blocktool(blockdev_qcow2(img)) as bt:
        bt.ok("snap-create a")
        with pytest.raises(BlockError, match="already has a snapshot named 'a'"):
            bt.ok("snap-create a")
        with pytest.raises(BlockError, match="node 'disk0' has no snapshot 'zz'"):
            bt.ok("snap-delete zz")
    qemu_img_check(img)


def test_raw_node_has_no_snapshots(tmp_path):
    img = tmp_path / "r.raw"
    img.write_bytes(bytes(65536))
    from test_block_lib import blockdev_raw
    with Blocktool(blockdev_raw(img)) as bt:
        assert bt.cmd("snap-list")[1] == "ok 0"
        with pytest.raises(BlockError, match="does not support internal snapshots"):
            bt.ok("snap-create x")


def read_snapshot_table(img):
    """[(entry bytes)] of the image's snapshot table."""
    with open(img, "rb") as f:
        h = f.read(72)
        n, off = int.from_bytes(h[60:64], "big"), int.from_bytes(h[64:72], "big")
        f.seek(off)
        data = f.read(1 << 20)
    entries, p = [], 0
    for _ in range(n):
        id_len, name_len = (int.from_bytes(data[p + 12:p + 14], "big"),
                            int.from_bytes(data[p + 14:p + 16], "big"))
        extra = int.from_bytes(data[p + 36:p + 40], "big")
        size = (40 + extra + id_len + name_len + 7) // 8 * 8
        entries.append(data[p:p + size])
        p += size
    return off, entries


def test_unknown_snapshot_extra_data_is_kept(tmp_path):
    img = str(tmp_path / "x.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    qemu_img("snapshot", "-c", "qemu-made", img)
    off, (entry,) = read_snapshot_table(img)
    extra = int.from_bytes(entry[36:40], "big")
    # Append 8 bytes of a future extra-data field to the entry, in place.
    unknown = b"FUTURE!!"
    rest = entry[40 + extra:].rstrip(b"\0")
    grown = (entry[:36] + (extra + 8).to_bytes(4, "big") + entry[40:40 + extra] + unknown + rest)
    grown += bytes(-len(grown) % 8)
    with open(img, "r+b") as f:
        f.seek(off)
        f.write(grown)
    qemu_img_check(img)
    with Blocktool(blockdev_qcow2(img)) as bt:
        bt.ok("fill 0 4096 1")
        bt.ok("snap-create mine")  # rewrites the snapshot table elsewhere
    new_off, entries = read_snapshot_table(img)
    assert new_off != off and len(entries) == 2 and entries[0] == grown
    with Blocktool(blockdev_qcow2(img)) as bt:
        bt.ok("snap-delete mine")
        bt.ok("snap-goto qemu-made")
    _, entries = read_snapshot_table(img)
    assert len(entries) == 1 and entries[0] == grown
    qemu_img_check(img)


def test_vmstate_writes_are_cheap_and_safe(tmp_path, pool):
    """vmstate L2 updates wait for the next flush point: a killed save leaks
    its clusters at most, a finished one is complete and checked clean."""
    img = str(tmp_path / "v.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "1M")
    bt = Blocktool(blockdev_qcow2(img), pool=pool)
    for i in range(200):
        bt.ok(f"vm-write {i * 8192} 4096 {i * 4096}")
    assert bt.crc("vm-read 8192 4096") == crc(pool_bytes(pool, 4096, 4096))
    bt.proc.kill()  # a crash in the middle of a save
    bt.proc.wait()
    r = qemu_img("check", img, check=False)
    assert r.returncode in (0, 3) and "ERROR" not in r.stdout + r.stderr, r.stdout + r.stderr
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        for i in range(200):
            bt.ok(f"vm-write {i * 8192} 4096 {i * 4096}")
        bt.ok("snap-create s")
        for i in (0, 57, 199):
            assert bt.crc(f"snap-vmread s {i * 8192} 4096") == crc(
                pool_bytes(pool, i * 4096, 4096))
    r = qemu_img("check", img, check=False)
    assert "ERROR" not in r.stdout + r.stderr
    assert snapshots_json(img)["s"]["vm-state-size"] == 199 * 8192 + 4096


def test_goto_to_where_the_disk_is_writes_nothing(tmp_path, pool):
    """A goto to the snapshot the disk is still at (nothing written since its
    creation or a goto to it) changes no byte of the image; once the disk is
    written, the next goto puts it back, and the active vmstate area stays."""
    img = str(tmp_path / "s.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "4M")
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 0 200000 0")
        bt.ok("snap-create s1 0")
        at_s1 = bt.crc("read 0 200000")
    for _ in range(2):
        before = open(img, "rb").read()
        with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
            bt.ok("snap-goto s1")
        assert open(img, "rb").read() == before, "a goto with nothing to do wrote the image"
    with Blocktool(blockdev_qcow2(img), pool=pool) as bt:
        bt.ok("write 4096 8192 300000")
        assert bt.crc("read 0 200000") != at_s1
        bt.ok("vm-write 0 70000 1000")  # an unsaved vmstate: not the guest disk
        bt.ok("snap-goto s1")
        assert bt.crc("read 0 200000") == at_s1
        assert bt.crc("vm-read 0 70000") == crc(pool_bytes(pool, 1000, 70000))
        before = open(img, "rb").read()
        bt.ok("snap-goto s1")  # at s1 again: nothing to do
        assert open(img, "rb").read() == before
    qemu_img_check(img)
