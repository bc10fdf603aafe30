#!/usr/bin/python3
"""The hostile-image corpus (issue 9, item 8): qcow2 images and vmstates
that are wrong in one precise way each, made from valid ones written by
snapvm (and one by QEMU), with the outcome each must have.

    /usr/bin/python3 tests/hostile/make_corpus.py OUTDIR     # writes OUTDIR/<case>/...

Every case starts from the same base: two 16 MiB qcow2 disks d0 and d1 of
the built-in guest with 16 MiB of RAM, a snapshot 's' on both (RAM filled
with seed 1, sectors written), and a disk write after it.  A case then
patches d0 (or adds files), and says what snapvm must do with it:

  kind 'open'     snapvm started on the images must refuse to start, or
                  (open_ok) start and then fail `action`, with an error
                  matching `expect`;
  kind 'write'    the guest writes sector `lba` of d0: the write must fail
                  (never land on metadata) and snapvm must report `expect`;
                  or, as QEMU's overlap check allows, go to a new cluster or
                  to bytes of a metadata cluster that hold no metadata: then
                  it reads back, no metadata byte changed (header, refcount
                  table, snapshot table and L1s) and qemu-img check finds no
                  new error;
  kind 'read'     the guest reads sector `lba` of d0: the read fails with
                  `expect` (and nothing is written);
  kind 'loadvm'   loadvm 's' must fail with `expect`, the guest keeps
                  running unchanged (RAM checksum, sectors);
  (or_open: for 'write', 'read' and 'loadvm' cases, refusing the image at
  start with an error matching `expect` is right too);
and for every case: the images are byte for byte unchanged (or, for
'write', only the corrupt flag may change), snapvm neither crashes nor
hangs.  tests/functional/test_fault_hostile.py runs them.
"""
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "functional"))

from qcow2img import (COMPRESSED, COPIED, OFFSET_MASK, Image, vm_encode,  # noqa: E402
                      vm_header_fields, vm_header_seal, vm_records)

MEM = "16"
DISK_SIZE = "16M"
DATA_LBA = 10      # written before the snapshot (cluster 0 of d0's guest disk)
FAR_LBA = 4096     # 2 MiB: its own L2 entry, in the same L2 table as LBA 10
LATE_LBA = 20000   # written after the snapshot only


class Case:
    def __init__(self, name, kind, make, expect, lba=DATA_LBA, open_ok=True, or_open=False):
        self.name, self.kind, self.make, self.expect = name, kind, make, expect
        # or_open: refusing the image at open, with an error matching `expect`,
        # is as right as failing the action (QEMU does so for these)
        self.lba, self.open_ok, self.or_open = lba, open_ok, or_open

    def __repr__(self):
        return self.name


# ---------------------------------------------------------------- base images

def make_base(d):
    """d0.qcow2, d1.qcow2 with snapshot 's'; returns the state saved in it."""
    from snapshot_vm import Disk, Guest
    os.makedirs(d, exist_ok=True)
    disks = [Disk("d0", "qcow2", DISK_SIZE), Disk("d1", "qcow2", DISK_SIZE)]
    with Guest(d, disks=disks, mem=MEM) as g:
        assert g.guest.cmd("fill 1 2") == "ok"
        for disk, lba, seed in ((0, DATA_LBA, 100), (0, FAR_LBA, 101), (1, DATA_LBA, 200)):
            assert g.guest.cmd(f"disk write {disk} {lba} {seed}") == "ok"
        g.qmp.cmd("savevm", tag="s")
        assert g.guest.cmd(f"disk write 0 {LATE_LBA} 300") == "ok"
    for name in ("d0", "d1"):
        r = subprocess.run(["qemu-img", "check", os.path.join(d, f"{name}.qcow2")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def d0(d):
    return Image(os.path.join(d, "d0.qcow2"))


# ------------------------------------------------------------ qcow2 metadata

def l2_of(im, lba):
    """(file offset of the L2 entry, entry) for a guest sector of the active L1."""
    return im.map(lba * 512)


def header_field(field, value):
    def make(d):
        with d0(d) as im:
            im.set(field, value)
    return make


def l1_entry_to(target):
    """The active L1 entry covering the data points at `target(im)`."""
    def make(d):
        with d0(d) as im:
            im.put_u64(im.l1_entry_offset(0), target(im) | COPIED)
    return make


def l2_entry_to(target, lba=DATA_LBA, flags=COPIED):
    def make(d):
        with d0(d) as im:
            at, _ = l2_of(im, lba)
            im.put_u64(at, target(im) | flags)
    return make


def first_reftable_block(im):
    return im.u64(im.get("refcount_table_offset")) & OFFSET_MASK


def active_l2(im):
    return im.l1()[0] & OFFSET_MASK


def snap_l1(im):
    return im.snapshot("s").l1_table_offset


def refcount_zero(target):
    """The refcount of a metadata cluster drops to 0: an allocation could reuse it."""
    def make(d):
        with d0(d) as im:
            im.set_refcount(target(im), 0)
    return make


def truncate_at(where):
    def make(d):
        with d0(d) as im:
            cut = where(im)
        os.truncate(os.path.join(d, "d0.qcow2"), cut)
    return make


def snapshot_table_patch(fn):
    """fn(im, snapshot, raw table bytes) -> new raw bytes written in place."""
    def make(d):
        with d0(d) as im:
            sn = im.snapshot("s")
            off = im.get("snapshots_offset")
            end = sn.offset + len(sn.encode())
            raw = bytearray(im.read(off, end - off))
            im.write(off, fn(im, sn, raw))
    return make


def snap_fixed(field_off, fmt, value):
    def fn(im, sn, raw):
        rel = sn.offset - im.get("snapshots_offset")
        struct.pack_into(fmt, raw, rel + field_off, value)
        return bytes(raw)
    return snapshot_table_patch(fn)


def duplicate_snapshot(same_name):
    def make(d):
        with d0(d) as im:
            sn = im.snapshot("s")
            if not same_name:
                sn.name = "t"
            entry = sn.encode()
            off = im.append_cluster()
            table = im.read(im.get("snapshots_offset"), len(entry)) + entry
            im.write(off, table)
            im.set("snapshots_offset", off)
            im.set("nb_snapshots", 2)
    return make


# ------------------------------------------------------------------ vmstates

def vmstate_patch(fn, header_fn=None):
    """fn(records) -> (records, lengths) rewritten with valid CRCs (and a
    matching vm_state_size), so only the records' meaning is wrong.  A
    description section (vmstate format 2) moves along after the records."""
    def make(d):
        with d0(d) as im:
            sn = im.snapshot("s")
            hdr = im.vmstate_read(sn, 0, 4096)
            f = vm_header_fields(hdr)
            records = vm_records(im.vmstate_read(sn, f["dev_offset"], f["dev_size"]))
            desc = im.vmstate_read(sn, f["desc_offset"], f["desc_size"]) if f["desc_size"] else b""
            records, lengths = fn(records)
            dev = vm_encode(records, lengths)
            hdr = bytearray(hdr)
            if header_fn:
                header_fn(hdr)
            old_end = f["dev_offset"] + f["dev_size"] + f["desc_size"]
            body = dev + desc
            im.vmstate_write(sn, f["dev_offset"], body + b"\0" * max(0, old_end - f["dev_offset"]
                                                                     - len(body)))
            im.vmstate_write(sn, 0, vm_header_seal(bytes(hdr), dev, desc))
            size = max(f["dev_offset"] + len(body), f["map_end"])
            sn.extra[0:8] = struct.pack(">Q", size)
            sn.vm_state_size32 = size if size < (1 << 32) else 0
            im.write(sn.offset, sn.encode())
    return make


def rec_replace(rid, fn):
    def patch(records):
        return [(r, v, fn(p) if r == rid else p) for r, v, p in records], None
    return patch


def set_byte(index, value):
    def fn(p):
        p = bytearray(p)
        p[index] = value
        return bytes(p)
    return fn


def uart_fifo(count):
    """serial0 v1: 9 registers, thre_pending, rx_count, rx[rx_count]."""
    def fn(p):
        return p[:10] + bytes([count]) + b"A" * count
    return fn


VIRTIO_QUEUES = 256 + 8 + 4 + 4 + 1 + 1 + 2 + 2  # pci config + transport fields


def virtio_queue_size(size):
    def fn(p):
        p = bytearray(p)
        struct.pack_into("<H", p, VIRTIO_QUEUES, size)
        return bytes(p)
    return fn


def virtio_num_queues(n):
    def fn(p):
        p = bytearray(p)
        struct.pack_into("<H", p, VIRTIO_QUEUES - 2, n)
        return bytes(p)
    return fn


def drop_record(rid):
    return lambda records: ([r for r in records if r[0] != rid], None)


def extra_record(rid):
    return lambda records: (records + [(rid, 1, b"\0" * 16)], None)


def record_version(rid, version):
    return lambda records: ([(r, version if r == rid else v, p) for r, v, p in records], None)


def announced_length(rid, delta):
    """The record's length field is off by delta (its payload is not)."""
    def patch(records):
        return records, {rid: len(next(p for r, v, p in records if r == rid)) + delta}
    return patch


def vm_header_u32(off, value):
    return lambda hdr: struct.pack_into("<I", hdr, off, value)


def vmstate_ram_extent_far(d):
    """The snapshot's first RAM cluster stored in place (allocated, not
    packed: a packed cluster's place is never read) points 1 TiB into the
    file."""
    with d0(d) as im:
        sn = im.snapshot("s")
        hdr = im.vmstate_read(sn, 0, 4096)
        f = vm_header_fields(hdr)
        packed = set()
        if f["version"] >= 3:  # the map: an entry (u32 cluster first) per packed cluster
            map_offset, map_size = struct.unpack("<QQ", hdr[136:152])
            unit = struct.unpack("<I", hdr[128:132])[0]
            esz = 8 + -(-unit // 64) * 8
            raw = im.vmstate_read(sn, map_offset, map_size)
            packed = {struct.unpack_from("<I", raw, at)[0] for at in range(0, map_size, esz)}
        base = im.vmstate_base(sn.disk_size) + (2 << 20)
        for c in range(f["ram_size"] // im.cluster_size):
            if c in packed:
                continue
            voff = base + c * im.cluster_size
            at, entry = im.map(voff, sn.l1_table_offset, sn.l1_size)
            if entry:
                im.put_u64(at, 1 << 40)
                return
        raise AssertionError("no RAM cluster stored in place")


def vmstate_from_qemu(d):
    """Replace d0/d1 by images whose snapshot 's' QEMU 7.2 wrote (a QEVM stream)."""
    for name in ("d0", "d1"):
        p = os.path.join(d, f"{name}.qcow2")
        os.unlink(p)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", p, DISK_SIZE], check=True)
    sock = os.path.join(d, "qemu-qmp.sock")
    q = subprocess.Popen(["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", MEM,
                          "-nodefaults", "-display", "none", "-S",
                          "-drive", f"file={os.path.join(d, 'd0.qcow2')},if=virtio,format=qcow2",
                          "-drive", f"file={os.path.join(d, 'd1.qcow2')},if=virtio,format=qcow2",
                          "-qmp", f"unix:{sock},server=on,wait=off"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from qmp import QMP
        deadline = time.monotonic() + 20
        while True:
            try:
                qmp = QMP(sock)
                break
            except (FileNotFoundError, ConnectionRefusedError, socket.error):
                if time.monotonic() > deadline or q.poll() is not None:
                    raise AssertionError(f"QEMU did not start: {q.stderr.read()}")
                time.sleep(0.1)
        out = qmp.cmd("human-monitor-command", command_line="savevm s")
        assert not out.strip(), out
        qmp.cmd("quit")
        qmp.close()
        q.wait(timeout=20)
    finally:
        if q.poll() is None:
            q.kill()
            q.wait()


# ------------------------------------------------------------------ backing

def backing(d, target, name="d0.qcow2"):
    """Give d0 a backing file name (written after the header extensions)."""
    with Image(os.path.join(d, name)) as im:
        off = im.cluster_size - 1024
        b = target.encode()
        im.write(off, b)
        im.set("backing_file_offset", off)
        im.set("backing_file_size", len(b))


def backing_fifo(d):
    os.mkfifo(os.path.join(d, "fifo"))
    backing(d, os.path.join(d, "fifo"))


def backing_self(d):
    backing(d, os.path.join(d, "d0.qcow2"))


def backing_loop(d):
    other = os.path.join(d, "loop.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", other, DISK_SIZE], check=True)
    backing(d, other)
    backing(d, os.path.join(d, "d0.qcow2"), name="loop.qcow2")


def backing_dir(d):
    os.mkdir(os.path.join(d, "adir"))
    backing(d, os.path.join(d, "adir"))


def backing_missing(d):
    backing(d, os.path.join(d, "nowhere.qcow2"))


def backing_chain(depth):
    def make(d):
        prev = None
        for i in range(depth):
            p = os.path.join(d, f"chain{i}.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", p, DISK_SIZE], check=True)
            if prev:
                backing(d, prev, name=f"chain{i}.qcow2")
            prev = p
        backing(d, prev)
    return make


def backing_dev_zero(d):
    backing(d, "/dev/zero")


# ------------------------------------------------------------------ the corpus

CASES = [
    # --- header (through snapvm's own open, at start) ---
    Case("hdr-magic", "open", header_field("magic", 0x51464900), r"not a qcow2 image",
         open_ok=False),
    Case("hdr-version-4", "open", header_field("version", 4), r"version 4", open_ok=False),
    Case("hdr-cluster-bits-31", "open", header_field("cluster_bits", 31), r"cluster_bits 31",
         open_ok=False),
    Case("hdr-incompatible-feature", "open", header_field("incompatible_features", 1 << 40),
         r"(?i)feature", open_ok=False),
    Case("hdr-refcount-order-7", "open", header_field("refcount_order", 7), r"(?i)refcount",
         open_ok=False),
    Case("hdr-header-length-small", "open", header_field("header_length", 72),
         r"(?i)header", open_ok=False),
    Case("hdr-l1-offset-unaligned", "open", header_field("l1_table_offset", 0x30008),
         r"L1 table", open_ok=False),
    Case("hdr-l1-offset-2^40", "open", header_field("l1_table_offset", 1 << 40),
         r"L1 table", open_ok=False),
    Case("hdr-reftable-2^40", "open", header_field("refcount_table_offset", 1 << 40),
         r"(?i)refcount table", open_ok=False),
    Case("hdr-snapshots-unaligned", "open", header_field("snapshots_offset", 0x10004),
         r"(?i)snapshot table", open_ok=False),
    Case("hdr-nb-snapshots-huge", "open", header_field("nb_snapshots", 70000),
         r"(?i)snapshot", open_ok=False),
    # --- tables pointing at metadata: guest writes must never land there ---
    Case("l1-at-header", "write", l1_entry_to(lambda im: 0), r"(?i)metadata|overlap|header"),
    Case("l1-at-reftable", "write", l1_entry_to(lambda im: im.get("refcount_table_offset")),
         r"(?i)metadata|overlap|refcount"),
    Case("l1-at-refblock", "write", l1_entry_to(first_reftable_block),
         r"(?i)metadata|overlap|refcount"),
    Case("l1-at-own-l1", "write", l1_entry_to(lambda im: im.get("l1_table_offset")),
         r"(?i)metadata|overlap|L1"),
    Case("l1-at-snapshot-l1", "write", l1_entry_to(snap_l1), r"(?i)metadata|overlap|L1"),
    Case("l2-at-header", "write", l2_entry_to(lambda im: 0), r"(?i)metadata|overlap|header"),
    Case("l2-at-l1", "write", l2_entry_to(lambda im: im.get("l1_table_offset")),
         r"(?i)metadata|overlap|L1"),
    Case("l2-at-refblock", "write", l2_entry_to(first_reftable_block),
         r"(?i)metadata|overlap|refcount"),
    Case("l2-at-reftable", "write", l2_entry_to(lambda im: im.get("refcount_table_offset")),
         r"(?i)metadata|overlap|refcount"),
    Case("l2-at-own-l2", "write", l2_entry_to(active_l2), r"(?i)metadata|overlap|L2"),
    Case("l2-at-snapshot-table", "write", l2_entry_to(lambda im: im.get("snapshots_offset")),
         r"(?i)metadata|overlap|snapshot"),
    Case("refcount-header-zero", "write", refcount_zero(lambda im: 0),
         r"(?i)metadata|overlap|refcount|header", lba=LATE_LBA + 4096),
    Case("refcount-l2-zero", "write", refcount_zero(active_l2),
         r"(?i)metadata|overlap|refcount|L2", lba=LATE_LBA + 4096),
    Case("refcount-refblock-zero", "write", refcount_zero(first_reftable_block),
         r"(?i)metadata|overlap|refcount", lba=LATE_LBA + 4096),
    # --- offsets at 2^40 and unaligned ---
    Case("l2-data-2^40-write", "write", l2_entry_to(lambda im: 1 << 40),
         r"(?i)beyond|past|offset"),
    Case("l1-2^40", "read", l1_entry_to(lambda im: 1 << 40), r"L2 table at 0x10000000000",
         or_open=True),
    Case("reftable-entry-2^40", "write", lambda d: _reftable_entry(d, 1 << 40),
         r"refcount block .* 0x10000000000", lba=LATE_LBA + 4096, or_open=True),
    Case("l2-data-unaligned", "read", l2_entry_to(lambda im: 0x50200), r"(?i)unaligned|align"),
    Case("l2-compressed-garbage", "read",
         l2_entry_to(lambda im: 0x30000 | (0x3f << 54), flags=COMPRESSED),
         r"(?i)compress"),
    # --- truncated tables ---
    Case("truncated-l2", "read", truncate_at(lambda im: active_l2(im) + 128),
         r"(?i)trunc|end of|beyond|past", lba=FAR_LBA, or_open=True),
    Case("truncated-reftable", "open", truncate_at(lambda im: im.get("refcount_table_offset")),
         r"(?i)refcount|trunc|end of", open_ok=False),
    Case("truncated-snapshot-table", "open",
         truncate_at(lambda im: im.get("snapshots_offset") + 20), r"(?i)snapshot",
         open_ok=False),
    Case("truncated-snapshot-l1", "loadvm", truncate_at(snap_l1), r"(?i)L1|trunc|end of",
         or_open=True),
    # --- bad snapshot tables ---
    Case("snap-l1-unaligned", "loadvm", snap_fixed(0, ">Q", 0x30008),
         r"snapshot 's' has an invalid L1 table \(offset 0x30008", or_open=True),
    Case("snap-l1-2^40", "loadvm", snap_fixed(0, ">Q", 1 << 40),
         r"snapshot 's' has an invalid L1 table \(offset 0x10000000000", or_open=True),
    Case("snap-l1-size-huge", "loadvm", snap_fixed(8, ">I", 0x10000000),
         r"snapshot 's' has an invalid L1 table .*268435456 entries", or_open=True),
    Case("snap-name-overflows", "open", snap_fixed(14, ">H", 0xffff), r"(?i)snapshot",
         open_ok=False),
    Case("snap-extra-huge", "open", snap_fixed(36, ">I", 0x7fffffff), r"(?i)snapshot",
         open_ok=False),
    Case("snap-duplicate-id", "open", duplicate_snapshot(False), r"(?i)snapshot.*(id|twice)",
         open_ok=False),
    Case("snap-vmstate-size-short", "loadvm", lambda d: _snap_vmstate_size(d, 8192),
         r"vmstate is truncated"),
    # --- vmstates with valid CRCs and bad records ---
    Case("vm-uart-fifo-200", "loadvm", vmstate_patch(rec_replace("serial0", uart_fifo(200))),
         r"serial0.*FIFO|FIFO.*serial0"),
    Case("vm-uart-short", "loadvm", vmstate_patch(rec_replace("serial0", lambda p: p[:5])),
         r"serial0"),
    Case("vm-uart-trailing", "loadvm", vmstate_patch(rec_replace("serial0", lambda p: p + b"x")),
         r"serial0"),
    Case("vm-virtio-queue-size-3", "loadvm",
         vmstate_patch(rec_replace("virtio-blk:d0", virtio_queue_size(3))),
         r"virtio-blk:d0.*size 3|size 3.*virtio-blk:d0"),
    Case("vm-virtio-queue-size-65535", "loadvm",
         vmstate_patch(rec_replace("virtio-blk:d1", virtio_queue_size(0xFFFF))),
         r"virtio-blk:d1"),
    Case("vm-virtio-num-queues", "loadvm",
         vmstate_patch(rec_replace("virtio-blk:d0", virtio_num_queues(7))), r"virtio-blk:d0"),
    Case("vm-virtio-capacity", "loadvm",
         vmstate_patch(rec_replace("virtio-blk:d0", lambda p: p[:-8] + struct.pack("<Q", 1)))
         , r"virtio-blk:d0|'d0'"),
    Case("vm-cpu0-truncated", "loadvm",
         vmstate_patch(rec_replace("cpu/0", lambda p: p[:len(p) // 2])), r"cpu/0|vcpu ?0"),
    Case("vm-cpu0-empty", "loadvm", vmstate_patch(rec_replace("cpu/0", lambda p: b"")),
         r"cpu/0|vcpu ?0"),
    Case("vm-kvm-truncated", "loadvm", vmstate_patch(rec_replace("kvm", lambda p: p[:100])),
         r"'kvm'|VM-wide|vm state"),
    Case("vm-pci-host-short", "loadvm", vmstate_patch(rec_replace("pci-host", lambda p: p[:100])),
         r"pci-host"),
    Case("vm-length-too-long", "loadvm", vmstate_patch(announced_length("serial0", 1)),
         r"(?i)vmstate|record"),
    Case("vm-length-2^32-1", "loadvm", vmstate_patch(announced_length("pci-host", 0x7fffffff)),
         r"(?i)pci-host|truncated"),
    Case("vm-missing-device", "loadvm", vmstate_patch(drop_record("virtio-blk:d1")),
         r"virtio-blk:d1"),
    Case("vm-missing-cpu", "loadvm", vmstate_patch(drop_record("cpu/0")), r"cpu/0|vcpu"),
    Case("vm-extra-device", "loadvm", vmstate_patch(extra_record("virtio-blk:d9")),
         r"virtio-blk:d9"),
    Case("vm-extra-cpu", "loadvm", vmstate_patch(extra_record("cpu/1")), r"cpu/1|vCPU"),
    Case("vm-record-version-9", "loadvm", vmstate_patch(record_version("serial0", 9)),
         r"serial0.*version|version.*serial0"),
    Case("vm-header-vcpus-2", "loadvm", vmstate_patch(lambda r: (r, None),
                                                      vm_header_u32(20, 2)), r"(?i)vCPU"),
    Case("vm-ram-extent-2^40", "loadvm", vmstate_ram_extent_far, r"(?i)beyond|past|offset|RAM"),
    Case("vm-written-by-qemu", "loadvm", vmstate_from_qemu, r"written by QEMU"),
    # --- backing files ---
    Case("backing-fifo", "open", backing_fifo, r"(?i)fifo|not a regular file", open_ok=False),
    Case("backing-self", "open", backing_self,
         r"(?i)loop|itself|chain|already open in this process", open_ok=False),
    Case("backing-loop", "open", backing_loop, r"(?i)loop|chain", open_ok=False),
    Case("backing-directory", "open", backing_dir, r"(?i)directory|regular", open_ok=False),
    Case("backing-missing", "open", backing_missing, r"nowhere\.qcow2", open_ok=False),
    Case("backing-dev-zero", "open", backing_dev_zero, r"(?i)/dev/zero|regular",
         open_ok=False),
    Case("backing-chain-300", "open", backing_chain(300), r"(?i)chain|deep|depth",
         open_ok=False),
]


def _reftable_entry(d, value):
    with d0(d) as im:
        rt = im.get("refcount_table_offset")
        # the first unused reftable entry: where the next refcount block would go
        n = im.get("refcount_table_clusters") * im.cluster_size // 8
        i = next(i for i in range(n) if not im.u64(rt + 8 * i))
        im.put_u64(rt + 8 * (i - 1), value)


def _snap_vmstate_size(d, size):
    with d0(d) as im:
        sn = im.snapshot("s")
        sn.extra[0:8] = struct.pack(">Q", size)
        sn.vm_state_size32 = size
        im.write(sn.offset, sn.encode())


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_case(case, base, outdir):
    d = os.path.join(outdir, case.name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name in ("d0", "d1"):
        shutil.copyfile(os.path.join(base, f"{name}.qcow2"), os.path.join(d, f"{name}.qcow2"))
    case.make(d)
    return d


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    base = os.path.join(out, "base")
    make_base(base)
    for c in CASES:
        make_case(c, base, out)
        print(f"{c.kind:7} {c.name}")
    print(f"{len(CASES)} cases in {out}")


if __name__ == "__main__":
    main()
