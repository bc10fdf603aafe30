"""A small qcow2 reader and patcher, written from QEMU's qcow2 specification
(docs/interop/qcow2.rst), for making hostile images out of valid ones.

It changes bytes in place and knows nothing about keeping an image valid:
that is the point.  The images it starts from are made by qemu-img or
snapvm; qemu-img check is the oracle for what is wrong with the result.
"""
import struct
import zlib

OFFSET_MASK = 0x00FFFFFFFFFFFE00  # L1/L2/refcount-table offsets (bits 9-55)
COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1

# name: (offset, struct format), big-endian
HEADER = {
    "magic": (0, ">I"),
    "version": (4, ">I"),
    "backing_file_offset": (8, ">Q"),
    "backing_file_size": (16, ">I"),
    "cluster_bits": (20, ">I"),
    "size": (24, ">Q"),
    "crypt_method": (32, ">I"),
    "l1_size": (36, ">I"),
    "l1_table_offset": (40, ">Q"),
    "refcount_table_offset": (48, ">Q"),
    "refcount_table_clusters": (56, ">I"),
    "nb_snapshots": (60, ">I"),
    "snapshots_offset": (64, ">Q"),
    "incompatible_features": (72, ">Q"),
    "compatible_features": (80, ">Q"),
    "autoclear_features": (88, ">Q"),
    "refcount_order": (96, ">I"),
    "header_length": (100, ">I"),
}


class Snapshot:
    """One snapshot table entry (fixed part, extra data, id, name)."""

    def __init__(self, raw_fixed, extra, id_str, name):
        (self.l1_table_offset, self.l1_size, _, _, self.date_sec, self.date_nsec,
         self.vm_clock_nsec, self.vm_state_size32, _) = struct.unpack(">QIHHIIQII", raw_fixed)
        self.extra = bytearray(extra)
        self.id_str, self.name = id_str, name

    @property
    def vm_state_size(self):
        if len(self.extra) >= 8:
            return struct.unpack(">Q", self.extra[:8])[0]
        return self.vm_state_size32

    @property
    def disk_size(self):
        if len(self.extra) >= 16:
            return struct.unpack(">Q", self.extra[8:16])[0]
        return None

    def encode(self):
        idb, nameb = self.id_str.encode(), self.name.encode()
        fixed = struct.pack(">QIHHIIQII", self.l1_table_offset, self.l1_size, len(idb),
                            len(nameb), self.date_sec, self.date_nsec, self.vm_clock_nsec,
                            self.vm_state_size32, len(self.extra))
        body = fixed + bytes(self.extra) + idb + nameb
        return body + b"\0" * (-len(body) % 8)


class Image:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "r+b")
        self.cluster_size = 1 << self.get("cluster_bits")
        self.l2_entries = self.cluster_size // 8

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- raw bytes ----

    def read(self, off, n):
        self.f.seek(off)
        data = self.f.read(n)
        return data + b"\0" * (n - len(data))

    def write(self, off, data):
        self.f.seek(off)
        self.f.write(data)
        self.f.flush()

    def u64(self, off):
        return struct.unpack(">Q", self.read(off, 8))[0]

    def put_u64(self, off, v):
        self.write(off, struct.pack(">Q", v))

    def file_size(self):
        self.f.seek(0, 2)
        return self.f.tell()

    def append_cluster(self, data=b""):
        """A new cluster at the (cluster-aligned) end of the file; no refcount."""
        off = -(-self.file_size() // self.cluster_size) * self.cluster_size
        self.write(off, data + b"\0" * (self.cluster_size - len(data)))
        return off

    # ---- header ----

    def get(self, name):
        off, fmt = HEADER[name]
        return struct.unpack(fmt, self.read(off, struct.calcsize(fmt)))[0]

    def set(self, name, value):
        off, fmt = HEADER[name]
        self.write(off, struct.pack(fmt, value))

    # ---- tables ----

    def l1(self, offset=None, size=None):
        offset = self.get("l1_table_offset") if offset is None else offset
        size = self.get("l1_size") if size is None else size
        return list(struct.unpack(">%dQ" % size, self.read(offset, 8 * size)))

    def l1_entry_offset(self, index, l1_offset=None):
        return (self.get("l1_table_offset") if l1_offset is None else l1_offset) + 8 * index

    def map(self, voff, l1_offset=None, l1_size=None):
        """(l2 entry file offset, l2 entry) of guest offset voff, or (None, 0)."""
        l1 = self.l1(l1_offset, l1_size)
        idx = voff // (self.cluster_size * self.l2_entries)
        if idx >= len(l1) or not l1[idx] & OFFSET_MASK:
            return None, 0
        at = (l1[idx] & OFFSET_MASK) + 8 * ((voff // self.cluster_size) % self.l2_entries)
        return at, self.u64(at)

    def host_offset(self, voff, l1_offset=None, l1_size=None):
        _, e = self.map(voff, l1_offset, l1_size)
        if e & COMPRESSED or not e & OFFSET_MASK:
            return None
        return (e & OFFSET_MASK) + voff % self.cluster_size

    def refcount_bits(self):
        return 1 << (self.get("refcount_order") if self.get("version") >= 3 else 4)

    def refcount_entry(self, cluster_off):
        """File offset and width (bytes) of the refcount of the cluster at cluster_off."""
        bits = self.refcount_bits()
        assert bits == 16, "only 16-bit refcounts are patched"
        per_block = self.cluster_size * 8 // bits
        ci = cluster_off // self.cluster_size
        rt = self.get("refcount_table_offset")
        block = self.u64(rt + 8 * (ci // per_block)) & OFFSET_MASK
        assert block, f"no refcount block for cluster {ci}"
        return block + 2 * (ci % per_block), 2

    def refcount(self, cluster_off):
        at, _ = self.refcount_entry(cluster_off)
        return struct.unpack(">H", self.read(at, 2))[0]

    def set_refcount(self, cluster_off, value):
        at, _ = self.refcount_entry(cluster_off)
        self.write(at, struct.pack(">H", value))

    # ---- snapshots ----

    def snapshots(self):
        out, p = [], self.get("snapshots_offset")
        for _ in range(self.get("nb_snapshots")):
            fixed = self.read(p, 40)
            extra_len, = struct.unpack(">I", fixed[36:40])
            id_len, name_len = struct.unpack(">HH", fixed[12:16])
            extra = self.read(p + 40, extra_len)
            q = p + 40 + extra_len
            s = Snapshot(fixed, extra, self.read(q, id_len).decode(),
                         self.read(q + id_len, name_len).decode())
            s.offset = p
            out.append(s)
            p = q + id_len + name_len
            p += -p % 8
        return out

    def fixed_metadata(self):
        """{name: bytes} of the metadata no guest write may change: the
        header fields (the corrupt flag in incompatible_features masked), the
        refcount table, the snapshot table and every snapshot's L1 table.
        (The active L1 and L2 tables and refcount blocks change with every
        allocation.)"""
        hl = self.get("header_length") if self.get("version") >= 3 else 72
        hdr = bytearray(self.read(0, hl))
        hdr[72:80] = b"\0" * 8 if hl >= 80 else hdr[72:80]
        out = {"header": bytes(hdr),
               "refcount table": self.read(self.get("refcount_table_offset"),
                                           self.get("refcount_table_clusters") * self.cluster_size)}
        snaps = self.snapshots()
        if snaps:
            end = snaps[-1].offset + len(snaps[-1].encode())
            out["snapshot table"] = self.read(self.get("snapshots_offset"),
                                              end - self.get("snapshots_offset"))
        for sn in snaps:
            out[f"L1 of snapshot {sn.name}"] = self.read(sn.l1_table_offset, 8 * sn.l1_size)
        return out

    def snapshot(self, name):
        return next(s for s in self.snapshots() if s.name == name)

    def vmstate_base(self, disk_size=None):
        span = self.cluster_size * self.l2_entries
        size = self.get("size") if disk_size is None else disk_size
        return -(-size // span) * span

    def vmstate_read(self, snap, pos, n):
        """Read vmstate bytes of `snap` (allocated clusters; holes read as zeros)."""
        out = bytearray()
        base = self.vmstate_base(snap.disk_size)
        while n > 0:
            voff = base + pos
            chunk = min(n, self.cluster_size - voff % self.cluster_size)
            host = self.host_offset(voff, snap.l1_table_offset, snap.l1_size)
            out += self.read(host, chunk) if host is not None else b"\0" * chunk
            pos += chunk
            n -= chunk
        return bytes(out)

    def vmstate_write(self, snap, pos, data):
        """Overwrite vmstate bytes in place; every cluster touched must be allocated."""
        base = self.vmstate_base(snap.disk_size)
        while data:
            voff = base + pos
            chunk = min(len(data), self.cluster_size - voff % self.cluster_size)
            host = self.host_offset(voff, snap.l1_table_offset, snap.l1_size)
            assert host is not None, f"vmstate position {pos} is not allocated"
            self.write(host, data[:chunk])
            pos += chunk
            data = data[chunk:]


# ---- snapvm's vmstate (src/snapshot/vmstate.h), little-endian ----
# Version 1: header CRC at 88.  Version 2: a description section follows the
# device section (offset 88, size 96, CRC 104 in the header), header CRC at 108.
# Version 3: the pack area and map (fields at 112-152; map offset 136, size
# 144), header CRC at 152.

VM_HDR_DEV_SIZE, VM_HDR_DEV_CRC = 56, 64
VM_HDR_DESC_OFFSET, VM_HDR_DESC_SIZE, VM_HDR_DESC_CRC = 88, 96, 104


def vm_header_fields(hdr):
    version = struct.unpack("<I", hdr[8:12])[0]
    f = {
        "version": version,
        "vcpus": struct.unpack("<I", hdr[20:24])[0],
        "ram_size": struct.unpack("<Q", hdr[24:32])[0],
        "dev_offset": struct.unpack("<Q", hdr[48:56])[0],
        "dev_size": struct.unpack("<Q", hdr[56:64])[0],
        "desc_offset": 0,
        "desc_size": 0,
    }
    if version >= 2:
        f["desc_offset"] = struct.unpack("<Q", hdr[88:96])[0]
        f["desc_size"] = struct.unpack("<Q", hdr[96:104])[0]
    f["map_end"] = 0
    if version >= 3:  # the pack area and its map, at fixed places past the sections
        f["map_end"] = sum(struct.unpack("<QQ", hdr[136:152]))
    return f


def vm_header_crc_offset(version):
    return 88 if version == 1 else 108 if version == 2 else 152


def vm_header_seal(hdr, devices, desc=b""):
    """Rewrite the device (and description) section sizes, offsets and CRCs,
    then the header CRC: a valid header for sections `devices`, `desc`
    laid out one after the other."""
    hdr = bytearray(hdr)
    f = vm_header_fields(hdr)
    hdr[VM_HDR_DEV_SIZE:VM_HDR_DEV_SIZE + 8] = struct.pack("<Q", len(devices))
    hdr[VM_HDR_DEV_CRC:VM_HDR_DEV_CRC + 4] = struct.pack("<I", zlib.crc32(devices))
    if f["version"] >= 2 and desc:
        struct.pack_into("<QQI", hdr, VM_HDR_DESC_OFFSET, f["dev_offset"] + len(devices),
                         len(desc), zlib.crc32(desc))
    crc_at = vm_header_crc_offset(f["version"])
    hdr[crc_at:crc_at + 4] = struct.pack("<I", zlib.crc32(bytes(hdr[:crc_at])))
    return bytes(hdr)


def vm_records(section):
    """[(id, version, payload)] of a device section."""
    out, p = [], 0
    while p < len(section):
        n, = struct.unpack("<H", section[p:p + 2])
        rid = section[p + 2:p + 2 + n].decode()
        version, length = struct.unpack("<II", section[p + 2 + n:p + 10 + n])
        out.append((rid, version, bytes(section[p + 10 + n:p + 10 + n + length])))
        p += 10 + n + length
    return out


def vm_encode(records, lengths=None):
    """Encode records; lengths[id] overrides the announced length of one."""
    out = bytearray()
    for rid, version, payload in records:
        length = (lengths or {}).get(rid, len(payload))
        out += struct.pack("<H", len(rid)) + rid.encode() + struct.pack("<II", version, length)
        out += payload
    return bytes(out)
