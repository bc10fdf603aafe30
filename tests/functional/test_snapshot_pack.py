"""Packed RAM clusters (vmstate format 3, src/snapshot/pack.h), on the real
KVM guest: a cluster of guest RAM holding zero and non-zero pages is stored
as its non-zero pages one after another in the pack area, its place in the
RAM section a hole.

The format is checked from outside snapvm: RAM is rebuilt from the image
file with tests/hostile/qcow2img.py and the layout of docs/snapshots.md,
and compared with what the guest had.  Loads, reverts in place and
incremental saves over packed clusters must give back the snapshot's RAM
exactly, and a corrupt pack map is refused with the running guest kept.
"""
import os
import re
import struct
import subprocess
import sys
import zlib

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "hostile"))
from faultctl import FaultCtl, fault_env  # noqa: E402
from qcow2img import Image  # noqa: E402
from qmp import QMPError  # noqa: E402
from snapshot_vm import Disk, Guest, qemu_img_check, qemu_img_snapshots  # noqa: E402
from test_snapshot_incr import (allocated, interleaved_ram, load_into_file,  # noqa: E402
                                nonzero_bytes, save_stopped)

pytestmark = pytest.mark.kvm

MiB = 1 << 20
PAGE = 4096
DEBUG = {**os.environ, "SNAPVM_DEBUG": "1"}


def header(im, tag):
    """The vmstate header of snapshot `tag`, as docs/snapshots.md lays it out."""
    sn = im.snapshot(tag)
    h = im.vmstate_read(sn, 0, 4096)
    f = {"version": struct.unpack_from("<I", h, 8)[0],
         "ram_size": struct.unpack_from("<Q", h, 24)[0],
         "ram_offset": struct.unpack_from("<Q", h, 72)[0]}
    if f["version"] >= 3:
        (f["pack_offset"], f["pack_pages"], f["pack_unit"], f["map_crc"], f["map_offset"],
         f["map_size"]) = struct.unpack_from("<QQIIQQ", h, 112)
        assert struct.unpack_from("<I", h, 152)[0] == zlib.crc32(h[:152])
    return sn, f


def entry_size(unit):
    return 8 + -(-unit // 64) * 8


def pack_map(im, sn, f):
    """{cluster: (first slot, [page bits of the cluster])} of a version-3 vmstate."""
    raw = im.vmstate_read(sn, f["map_offset"], f["map_size"])
    assert zlib.crc32(raw) == f["map_crc"]
    unit, esz = f["pack_unit"], entry_size(f["pack_unit"])
    entries = {}
    for at in range(0, len(raw), esz):
        c, slot = struct.unpack_from("<II", raw, at)
        bits = int.from_bytes(raw[at + 8:at + esz], "little")
        entries[c] = (slot, [bits >> i & 1 for i in range(unit)])
    return entries


def encode_map(entries, unit):
    out = b""
    for c, (slot, bits) in entries.items():
        word = sum(b << i for i, b in enumerate(bits))
        out += struct.pack("<II", c, slot) + word.to_bytes(entry_size(unit) - 8, "little")
    return out


def rebuild_ram(path, tag):
    """Guest RAM of snapshot `tag`, read from the image by the format alone."""
    with Image(path) as im:
        sn, f = header(im, tag)
        ram = bytearray(im.vmstate_read(sn, f["ram_offset"], f["ram_size"]))
        if f["version"] < 3:
            return bytes(ram), 0
        entries = pack_map(im, sn, f)
        unit = f["pack_unit"]
        for c, (slot, bits) in entries.items():
            for i, has in enumerate(bits):
                p = c * unit + i
                if p >= f["ram_size"] // PAGE:
                    assert not has
                elif has:
                    ram[p * PAGE:(p + 1) * PAGE] = im.vmstate_read(
                        sn, f["pack_offset"] + slot * PAGE, PAGE)
                    slot += 1
                else:
                    assert ram[p * PAGE:(p + 1) * PAGE] == bytes(PAGE)
        return bytes(ram), len(entries)


def test_interleaved_ram_is_packed_as_the_format_says(tmp_path):
    """Zero pages interleaved at 4 KiB: every cluster is packed, the image
    grows by the data alone, and the RAM rebuilt from the image file by the
    documented format is the guest's, as is what a load gives back."""
    size = 64
    ram = tmp_path / "vm.ram"
    interleaved_ram(ram, size * MiB)
    disk = Disk("disk0", "qcow2", "64M")
    g = Guest(tmp_path, disks=[disk], mem=str(size), extra=["-mem-path", str(ram)]).start()
    try:
        img = disk.path(tmp_path)
        g.qmp.cmd("stop")
        before = allocated(img)
        reply = g.qmp.cmd("savevm", tag="a")
        with open(ram, "rb") as f:
            saved = f.read()
    finally:
        g.stop()
    growth = allocated(img) - before
    data = nonzero_bytes(saved)
    assert data >= size * MiB // 2 - MiB  # the pattern, give or take the guest's own pages
    # Only the non-zero pages, plus metadata (L2 tables, refcounts, header, devices, map).
    assert growth <= data + 2 * MiB, (growth, data)
    assert reply["bytes-written"] < data + MiB, reply
    assert qemu_img_check(img) == (0, 0)
    assert qemu_img_snapshots(img)["a"]["vm-state-size"] > size * MiB
    rebuilt, packed = rebuild_ram(img, "a")
    assert packed >= size * MiB // (64 << 10) - 8, packed  # the guest's own pages aside
    assert rebuilt == saved
    assert load_into_file(tmp_path, disk, "a", size, "load") == saved


def test_every_write_of_a_pipelined_save_failing_fails_that_save(tmp_path):
    """A save's first pass leaves each batch of RAM writes in flight while it
    plans the next (src/block/qcow2-vmstate.c, Pipelining): a failure of one
    is seen by the call for the next batch, or by the wait after the last.
    Each write of the save fails in turn, the RAM batches of all three
    chunks among them: every such save fails and says why, and leaves no
    snapshot; the image stays clean and the save after them is whole.  The
    save writes each refcount block once per batch, not once per cluster,
    so a save of 96 MiB makes a few dozen writes."""
    size = 96  # three chunks of 32 MiB: two batches are reported by a later call
    ram = tmp_path / "vm.ram"
    interleaved_ram(ram, size * MiB)
    disk = Disk("disk0", "qcow2", "64M")
    img = disk.path(tmp_path)
    env = fault_env(tmp_path)
    g = Guest(tmp_path, disks=[disk], mem=str(size), extra=["-mem-path", str(ram)],
              env=env).start()
    try:
        f = FaultCtl(env["SNAPVM_FAULT_CTL"])
        g.qmp.cmd("stop")
        for _ in range(2):  # the second save reuses what the first one's delete freed
            f.reset()
            g.qmp.cmd("savevm", tag="probe")
            writes = f.counts()["write"]
            g.qmp.cmd("delvm", tag="probe")
        assert writes < 100, writes  # not one per cluster
        ram_batches = failed = 0
        for nth in range(1, writes + 1):
            f.arm(f"op=write,nth={nth},errno=EIO,path=disk0.qcow2")
            try:
                g.qmp.cmd("savevm", tag="a")
                error = None
            except QMPError as e:
                error = e.desc
            c = f.counts()
            f.disarm()
            # A save that failed did fire its fault (a failed save may make fewer
            # writes; a refcount drop after the commit point fails without the save).
            fired = c["last-injected"].startswith(f"write #{nth} ")
            assert fired or error is None, (nth, error, c["last-injected"])
            if error is None:
                g.qmp.cmd("delvm", tag="a")
                continue
            failed += 1
            assert "Input/output error" in error, (nth, error)
            assert "a" not in qemu_img_snapshots(img), nth
            m = re.search(r"\((\d+) bytes at", c["last-injected"])
            ram_batches += int(m.group(1)) >= 8 * MiB  # a chunk's slots: 16 MiB
        assert failed >= writes // 2 and ram_batches >= 3, (failed, writes, ram_batches)
        saved = save_stopped(g, ram, "b")
    finally:
        g.stop()
    assert qemu_img_check(img) == (0, 0)
    assert set(qemu_img_snapshots(img)) == {"b"}
    assert rebuild_ram(img, "b")[0] == saved
    assert load_into_file(tmp_path, disk, "b", size, "load") == saved


@pytest.mark.parametrize("layout", ["sparse", "fallocated"])
def test_mem_path_ram_the_guest_just_wrote_is_saved_whole(tmp_path, layout):
    """A -mem-path RAM file's holes are found by FIEMAP (else SEEK_DATA)
    without reading them.  Pages the guest has just written through the
    shared mapping are not on disk yet: delayed allocations in a sparse
    file, data over unwritten extents in a fallocated one.  None of them
    may pass for a hole: the image, rebuilt by the format alone, and a
    load in a fresh process give back exactly the RAM file's bytes."""
    size = 64
    ram = tmp_path / "vm.ram"
    with open(ram, "wb") as f:
        f.truncate(size * MiB)
    if layout == "fallocated":
        subprocess.run(["fallocate", "-l", str(size * MiB), str(ram)], check=True)
    disk = Disk("disk0", "qcow2", "64M")
    g = Guest(tmp_path, disks=[disk], mem=str(size), extra=["-mem-path", str(ram)]).start()
    try:
        assert g.guest.cmd("sparse 11 16") == "ok"  # half its pages zero, scattered
        assert g.guest.cmd("fill 12 8") == "ok"  # over the first half of it: dense
        saved = save_stopped(g, ram)
    finally:
        g.stop()
    assert nonzero_bytes(saved) >= 12 * MiB
    img = disk.path(tmp_path)
    assert qemu_img_check(img) == (0, 0)
    rebuilt, packed = rebuild_ram(img, "a")
    assert packed >= 8 * MiB // (64 << 10) - 8, packed
    assert rebuilt == saved
    assert load_into_file(tmp_path, disk, "a", size, "load") == saved


def packed_clusters(g):
    return [int(n) for n in re.findall(r"(\d+) clusters packed", g.guest.stderr())]


def test_loads_reverts_and_incremental_saves_over_packed_clusters(tmp_path):
    """Private guest RAM with scattered zero pages beside dense data: every
    way back to a snapshot with packed clusters -- a full load, a revert in
    place, an incremental save, a load in a fresh process -- gives back its
    RAM exactly (the guest's own checksum), and the image stays clean."""
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem="64", env=DEBUG) as g:
        assert g.guest.cmd("fill 1 24") == "ok"
        assert g.guest.cmd("sparse 2 8") == "ok"  # the first 8 MiB: half its pages zero
        sum_a = g.guest.sum()
        g.qmp.cmd("savevm", tag="a")
        assert packed_clusters(g)[-1] >= 8 * MiB // (64 << 10) - 2, g.guest.stderr()
        # Packed clusters become dense, dense ones sparse, some go zero: revert in place.
        assert g.guest.cmd("fill 3 4") == "ok"
        assert g.guest.cmd("sparse 4 12") == "ok"
        assert g.guest.cmd("zero 1") == "ok"
        g.qmp.cmd("loadvm", tag="a")
        assert "revert in place" in g.guest.stderr()
        g.resync()
        assert g.guest.sum() == sum_a
        # An incremental save from a: only the changed clusters are written.
        assert g.guest.cmd("fill 5 1") == "ok"
        reply = g.qmp.cmd("savevm", tag="b")
        assert reply["bytes-written"] < 4 * MiB, reply
        sum_b = g.guest.sum()
        g.qmp.cmd("loadvm", tag="a")
        g.resync()
        assert g.guest.sum() == sum_a
        g.qmp.cmd("loadvm", tag="b")
        g.resync()
        assert g.guest.sum() == sum_b
        g.qmp.cmd("delvm", tag="a")
        g.qmp.cmd("loadvm", tag="b")
        g.resync()
        assert g.guest.sum() == sum_b
    img = disk.path(tmp_path)
    assert qemu_img_check(img) == (0, 0)
    with Image(img) as im:
        assert header(im, "b")[1]["version"] == 3  # b shares a's pack area
    with Guest(tmp_path, disks=[disk], mem="64") as g:
        g.qmp.cmd("loadvm", tag="b")
        g.resync()
        assert g.guest.sum() == sum_b


def save_packed(tmp_path, disk):
    with Guest(tmp_path, disks=[disk], mem="64") as g:
        assert g.guest.cmd("sparse 7 8") == "ok"
        g.qmp.cmd("savevm", tag="a")


def patch_map(path, fn):
    """fn(entries) rewrites the map ({cluster: (slot, bits)}, or raw bytes
    for a damage the dict cannot hold); its CRC and the header's are made
    right again unless fn returns False."""
    with Image(path) as im:
        sn, f = header(im, "a")
        entries = pack_map(im, sn, f)
        out = fn(entries)
        raw = out if isinstance(out, bytes) else encode_map(entries, f["pack_unit"])
        assert len(raw) == f["map_size"]
        im.vmstate_write(sn, f["map_offset"], raw)
        if out is not False:
            h = bytearray(im.vmstate_read(sn, 0, 4096))
            struct.pack_into("<I", h, 132, zlib.crc32(raw))
            struct.pack_into("<I", h, 152, zlib.crc32(bytes(h[:152])))
            im.vmstate_write(sn, 0, bytes(h))
        else:
            raw = bytearray(raw)
            raw[0] ^= 1
            im.vmstate_write(sn, f["map_offset"], bytes(raw))


def flip_bit(entries):
    return False


def slot_past_the_area(entries):
    c = next(iter(entries))
    entries[c] = (0xfffff000, entries[c][1])


def cluster_twice(entries):
    first, second = list(entries)[:2]
    return encode_map({first: entries[first]}, 16) + encode_map({first: entries[second]}, 16) + \
        encode_map({c: v for c, v in entries.items() if c not in (first, second)}, 16)


@pytest.mark.parametrize("corruption,error", [
    (flip_bit, r"pack map checksum mismatch"),
    (slot_past_the_area, r"cluster \d+ \(guest RAM 0x[0-9a-f]+\) at slots .* past the pack area"),
    (cluster_twice, r"entry 1 names cluster \d+, out of order"),
])
def test_a_corrupt_pack_map_is_refused_and_the_guest_keeps_running(tmp_path, corruption, error):
    disk = Disk("disk0", "qcow2", "64M")
    save_packed(tmp_path, disk)
    img = disk.path(tmp_path)
    patch_map(img, corruption)
    with Guest(tmp_path, disks=[disk], mem="64") as g:
        assert g.guest.cmd("fill 9 4") == "ok"
        before = g.guest.sum()
        with pytest.raises(QMPError) as e:
            g.qmp.cmd("loadvm", tag="a")
        assert re.search(error, str(e.value)), str(e.value)
        assert "snapshot 'a' on node 'disk0'" in str(e.value)
        assert g.qmp.cmd("query-status")["running"] is True
        assert g.guest.sum() == before
        entry = next(s for s in g.qmp.cmd("query-snapshots") if s["tag"] == "a")
        assert entry["loadable"] is False and re.search(error, entry["reason"]), entry


@pytest.mark.parametrize("cluster", ["8K", "2M"])
def test_cluster_sizes_and_a_partial_last_cluster(tmp_path, cluster):
    """Clusters of 2 pages and of 512 (eight words of page bits per map
    entry), with RAM (65 MiB) ending inside a 2 MiB cluster: saves pack,
    and loads, reverts and a fresh process give back the guest's RAM."""
    img = tmp_path / "disk0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster}",
                    str(img), "64M"], check=True)
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk], mem="65", env=DEBUG) as g:
        assert g.guest.cmd("fill 1 40") == "ok"
        assert g.guest.cmd("sparse 2 16") == "ok"
        sum_a = g.guest.sum()
        g.qmp.cmd("savevm", tag="a")
        assert packed_clusters(g)[-1] > 0
        assert g.guest.cmd("sparse 3 24") == "ok"
        g.qmp.cmd("loadvm", tag="a")
        g.resync()
        assert g.guest.sum() == sum_a
    assert qemu_img_check(str(img)) == (0, 0)
    rebuilt, packed = rebuild_ram(str(img), "a")
    assert packed > 0 and len(rebuilt) == 65 * MiB
    with Guest(tmp_path, disks=[disk], mem="65") as g:
        g.qmp.cmd("loadvm", tag="a")
        g.resync()
        assert g.guest.sum() == sum_a
