#!/usr/bin/python3
"""Seed corpora for fuzz_devstate and fuzz_snapshot_table, from real images:

    /usr/bin/python3 fuzz/make-state-corpus.py OUTDIR
      -> OUTDIR/devstate/*    one file per record of a snapshot snapvm saved
                              (selector byte + payload: see fuzz_devstate.c)
      -> OUTDIR/snaptable/*   snapshot tables qemu-img and snapvm wrote
                              (nb_snapshots, placement byte, table)

It runs build/snapvm (SNAPVM_BUILD selects another build) on KVM to save a
snapshot of the built-in guest, and qemu-img for a second table.
"""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests", "hostile"), os.path.join(ROOT, "tests", "functional")]

import make_corpus  # noqa: E402
from qcow2img import Image, vm_header_fields, vm_records  # noqa: E402

SELECTOR = {"serial0": 0, "pci-host": 1, "virtio-blk:d0": 2, "cpu/0": 3, "kvm": 4}


def table_seed(path):
    with Image(path) as im:
        snaps = im.snapshots()
        raw = b"".join(s.encode() for s in snaps)
    return bytes([len(snaps), 0]) + raw


def main():
    out = sys.argv[1]
    dev, tab = os.path.join(out, "devstate"), os.path.join(out, "snaptable")
    os.makedirs(dev, exist_ok=True)
    os.makedirs(tab, exist_ok=True)
    with tempfile.TemporaryDirectory() as w:
        make_corpus.make_base(w)
        img = os.path.join(w, "d0.qcow2")
        with Image(img) as im:
            sn = im.snapshot("s")
            f = vm_header_fields(im.vmstate_read(sn, 0, 4096))
            for rid, _, payload in vm_records(im.vmstate_read(sn, f["dev_offset"], f["dev_size"])):
                if rid in SELECTOR:
                    name = rid.replace("/", "-").replace(":", "-")
                    with open(os.path.join(dev, name), "wb") as fh:
                        fh.write(bytes([SELECTOR[rid]]) + payload)
        with open(os.path.join(tab, "snapvm"), "wb") as fh:
            fh.write(table_seed(img))
        q = os.path.join(w, "q.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", q, "1M"], check=True)
        for tag in ("a", "b"):
            subprocess.run(["qemu-img", "snapshot", "-c", tag, q], check=True)
        with open(os.path.join(tab, "qemu-img"), "wb") as fh:
            fh.write(table_seed(q))
    print(f"seeds: {len(os.listdir(dev))} records, {len(os.listdir(tab))} tables in {out}")


if __name__ == "__main__":
    main()
