"""Snapshots that describe themselves (issue 11, items 1-3): each snapshot
records its node set, its parent and the VM's shape inside its vmstate, so
that loading by tag alone works through every interface (QMP, HMP,
-loadvm) -- with the UEFI case of two qcow2 disks and a raw writable
varstore -- and query-snapshots gives the tree, with `current`, from the
images alone, in a fresh process too."""
import os
import shutil
import struct
import subprocess

import pytest

from qmp import QMPError
from snapshot_vm import Disk, Guest, qemu_img_check, qemu_img_snapshots
from test_block_lib import BLOCKTOOL
from vm import run_snapvm

pytestmark = pytest.mark.kvm


def uefi_disks():
    """Two qcow2 disks and the raw writable firmware varstore."""
    return [Disk("root", "qcow2", "64M"), Disk("data", "qcow2", "32M"),
            Disk("vars", "raw", "256K", attach=False)]


def snaps(g):
    return {s["tag"]: s for s in g.qmp.cmd("query-snapshots")}


def tree(g):
    """{tag: parent tag or None}, and the current tag."""
    entries = snaps(g)
    current = [t for t, s in entries.items() if s["current"]]
    assert len(current) <= 1, entries
    return {t: s.get("parent") for t, s in entries.items()}, (current[0] if current else None)


def expect_error(qmp, command, *needles, **args):
    with pytest.raises(QMPError) as exc:
        qmp.cmd(command, **args)
    for needle in needles:
        assert needle in exc.value.desc, exc.value.desc
    return exc.value.desc


def check_images(tmp_path, names=("root", "data")):
    for d in names:
        assert qemu_img_check(str(tmp_path / f"{d}.qcow2")) == (0, 0)


def test_record_names_node_set_vmstate_and_shape(tmp_path):
    with Guest(tmp_path, disks=uefi_disks()) as g:
        g.qmp.cmd("savevm", tag="a", exclude=["vars"])
        s = snaps(g)["a"]
        assert s["loadable"] is True, s
        assert "reason" not in s
        assert s["vmstate"] == "root"
        assert s["nodes"] == ["root", "data"] and s["excluded"] == ["vars"]
        assert s["current"] is True and "parent" not in s
        m = s["machine"]
        assert m["ram-size"] == 64 << 20 and m["vcpus"] == 1
        drives = {d["drive"]: d["type"] for d in m["devices"] if "drive" in d}
        assert drives == {"root": "virtio-blk-pci", "data": "virtio-blk-pci"}
        assert any(d["type"] == "serial" for d in m["devices"])
    check_images(tmp_path)


def test_uefi_case_by_tag_alone_through_qmp_hmp_and_loadvm(tmp_path):
    disks = uefi_disks()
    with Guest(tmp_path, disks=disks) as g:
        g.guest.cmd("fill 7 8")
        g.guest.cmd("disk write 1 5 42")
        ram, d1 = g.guest.sum(), g.sector(1, 5)
        t = g.paused_tick()
        g.qmp.cmd("savevm", tag="a", exclude=["vars"])
        g.qmp.cmd("cont")
        # QMP loadvm {tag}: the recorded set (root, data), not the varstore.
        g.guest.cmd("fill 8 8")
        g.guest.cmd("disk write 1 5 43")
        info = g.qmp.cmd("loadvm", tag="a")
        assert info["devices"] == ["root", "data"] and info["vmstate"] == "root"
        g.resync()
        assert g.guest.sum() == ram and g.sector(1, 5) == d1
        # HMP loadvm TAG, which cannot pass `exclude`.
        g.guest.cmd("fill 9 8")
        assert g.qmp.hmp("loadvm a") == ""
        g.resync()
        assert g.guest.sum() == ram
        # HMP savevm reuses the node set of the current snapshot ("a").
        assert g.qmp.hmp("savevm b") == ""
        s = snaps(g)
        assert s["b"]["nodes"] == ["root", "data"] and s["b"]["excluded"] == ["vars"]
        assert s["b"]["parent"] == "a" and s["b"]["current"] and not s["a"]["current"]
        # HMP delvm (and QMP delvm) need no 'exclude' either: the varstore holds nothing.
        assert g.qmp.hmp("savevm c") == ""
        assert g.qmp.hmp("delvm c") == ""
        g.qmp.cmd("savevm", tag="d", exclude=["vars"])
        assert g.qmp.cmd("delvm", tag="d")["deleted"] == ["root", "data"]
    # -loadvm TAG in a fresh process: the guest carries on from the snapshot.
    with Guest(tmp_path, disks=disks, extra=["-loadvm", "a"], wait_ready=False) as g:
        assert g.next_tick() == t + 1
        assert g.guest.sum() == ram and g.sector(1, 5) == d1
        assert tree(g) == ({"a": None, "b": "a"}, "a")
    check_images(tmp_path)
    assert qemu_img_snapshots(str(tmp_path / "data.qcow2"))["a"]["vm-state-size"] == 0


def test_hmp_savevm_without_a_current_snapshot_fails_as_qemu(tmp_path):
    with Guest(tmp_path, disks=uefi_disks()) as g:
        out = g.qmp.hmp("savevm x")
        assert "Device 'vars' is writable but does not support snapshots" in out, out
        assert "exclude" not in out
        assert g.qmp.cmd("query-snapshots") == []
        # HMP loadvm of a tag that no node holds: QEMU's words, no 'exclude' either.
        out = g.qmp.hmp("loadvm nope")
        assert "Error" in out and "exclude" not in out, out
        # QMP savevm can exclude: its error says so.
        expect_error(g.qmp, "savevm", "'vars'", "'exclude'", tag="x")
    args = Guest(tmp_path, disks=uefi_disks()).args
    r = run_snapvm(args + ["-loadvm", "nope", "-serial", "null"])
    assert r.returncode == 1 and "-loadvm nope" in r.stderr
    assert "exclude" not in r.stderr, r.stderr


def test_explicit_sets_win_and_contradictions_are_named(tmp_path):
    with Guest(tmp_path, disks=uefi_disks()) as g:
        g.qmp.cmd("savevm", tag="a", exclude=["vars", "data"])
        assert snaps(g)["a"]["excluded"] == ["data", "vars"]
        # An explicit set that leaves out a recorded node is the caller's choice...
        g.guest.cmd("disk write 0 2 5")
        g.qmp.cmd("savevm", tag="b", exclude=["vars"])
        info = g.qmp.cmd("loadvm", tag="b", exclude=["vars", "data"])
        assert info["devices"] == ["root"]
        # ...but a node the snapshot did not record is an error that names it.
        expect_error(g.qmp, "loadvm", "Node 'data' was excluded when snapshot 'a' was saved",
                     tag="a", exclude=["vars"])
        expect_error(g.qmp, "loadvm", "'vmstate'", "'root'", "'data'", tag="b", vmstate="data")
        g.qmp.cmd("snapshot-load", job_id="j1", tag="a", vmstate="root", devices=["root", "data"])
        job = g.wait_job("j1")
        assert "Node 'data' was excluded when snapshot 'a' was saved" in job["error"], job
        g.qmp.cmd("snapshot-load", job_id="j2", tag="a", vmstate="root", devices=["root"])
        assert "error" not in g.wait_job("j2")
        assert tree(g)[1] == "a"
    check_images(tmp_path)


def test_a_recorded_node_missing_from_the_vm(tmp_path):
    """The record names a node this VM lacks: each interface says so, QMP
    (which can) suggests naming the nodes, HMP and -loadvm do not; an
    explicit set within the record still loads."""
    root, vars_ = Disk("root", "qcow2", "64M"), Disk("vars", "raw", "256K", attach=False)
    with Guest(tmp_path, disks=[root, Disk("data", "qcow2", "32M", attach=False), vars_]) as g:
        g.guest.cmd("fill 2 8")
        ram = g.guest.sum()
        g.qmp.cmd("savevm", tag="a", exclude=["vars"])
    with Guest(tmp_path, disks=[root, vars_]) as g:
        hmp = g.qmp.hmp("savevm b")
        assert "savevm reuses the nodes of the current snapshot 'a'" in hmp, hmp
        assert "node 'data', which this VM does not have" in hmp and "exclude" not in hmp
        hmp = g.qmp.hmp("loadvm a")
        assert "node 'data', which this VM does not have" in hmp and "exclude" not in hmp
        expect_error(g.qmp, "loadvm", "node 'data', which this VM does not have", "'exclude'",
                     tag="a")
        assert snaps(g)["a"]["loadable"] is False
        g.qmp.cmd("loadvm", tag="a", exclude=["vars"])
        g.resync()
        assert g.guest.sum() == ram
    r = run_snapvm(Guest(tmp_path, disks=[root, vars_]).args + ["-loadvm", "a", "-serial", "null"])
    assert r.returncode == 1 and "which this VM does not have" in r.stderr
    assert "exclude" not in r.stderr, r.stderr


def test_swapped_drives_are_refused(tmp_path):
    """The record says which node backed each device: a VM whose devices
    have the same ids but sit on each other's disks is refused, by name."""
    disks = [Disk("root", "qcow2", "64M", attach=False), Disk("data", "qcow2", "64M", attach=False)]
    wiring = ["-device", "virtio-blk-pci,drive=root,id=blk0",
              "-device", "virtio-blk-pci,drive=data,id=blk1"]
    with Guest(tmp_path, disks=disks, extra=wiring) as g:
        g.qmp.cmd("savevm", tag="a")
    swapped = ["-device", "virtio-blk-pci,drive=data,id=blk0",
               "-device", "virtio-blk-pci,drive=root,id=blk1"]
    with Guest(tmp_path, disks=disks, extra=swapped) as g:
        desc = expect_error(g.qmp, "loadvm", "device 'blk0' backed by node 'root'",
                            "backed by 'data'", tag="a")
        s = snaps(g)["a"]
        assert s["loadable"] is False and s["reason"] == desc
    with Guest(tmp_path, disks=disks, extra=wiring) as g:
        g.qmp.cmd("loadvm", tag="a")


def test_tree_parent_current_and_delete_reconnects(tmp_path):
    disks = [Disk("disk0", "qcow2", "64M")]
    with Guest(tmp_path, disks=disks) as g:
        g.qmp.cmd("savevm", tag="a")
        g.qmp.cmd("savevm", tag="b")
        assert tree(g) == ({"a": None, "b": "a"}, "b")
        g.qmp.cmd("loadvm", tag="a")
        g.resync()
        assert tree(g)[1] == "a"
        g.qmp.cmd("savevm", tag="c")
        g.qmp.cmd("savevm", tag="d")
        assert tree(g) == ({"a": None, "b": "a", "c": "a", "d": "c"}, "d")
        # Deleting c reconnects its child d to a.
        g.qmp.cmd("delvm", tag="c")
        assert tree(g) == ({"a": None, "b": "a", "d": "a"}, "d")
        # Deleting the current snapshot makes its parent current.
        g.qmp.cmd("delvm", tag="d")
        assert tree(g) == ({"a": None, "b": "a"}, "a")
        g.qmp.cmd("savevm", tag="e")
        assert tree(g) == ({"a": None, "b": "a", "e": "a"}, "e")
        # HMP savevm replaces a tag: the new "e" hangs where the old one did.
        assert g.qmp.hmp("savevm e") == ""
        assert tree(g) == ({"a": None, "b": "a", "e": "a"}, "e")
    check_images(tmp_path, ["disk0"])


def test_fresh_process_reads_the_tree_without_the_command_line(tmp_path):
    disks = uefi_disks()
    with Guest(tmp_path, disks=disks) as g:
        g.qmp.cmd("savevm", tag="base", exclude=["vars"])
        g.qmp.cmd("savevm", tag="left", exclude=["vars"])
        g.qmp.cmd("loadvm", tag="base")
        g.resync()
        g.qmp.cmd("savevm", tag="right", exclude=["vars"])
        g.qmp.cmd("loadvm", tag="left")
        g.resync()
        before = snaps(g)
    # A different VM: other RAM size, only the images as block nodes, no devices.
    other = [Disk("root", "qcow2", "64M", attach=False), Disk("data", "qcow2", "32M", attach=False),
             Disk("vars", "raw", "256K", attach=False)]
    with Guest(tmp_path, disks=other, mem="96") as g:
        assert tree(g) == ({"base": None, "left": "base", "right": "base"}, "left")
        s = snaps(g)
        for tag in before:
            for key in ("nodes", "excluded", "vmstate", "machine", "id", "date-sec"):
                assert s[tag][key] == before[tag][key], (tag, key)
            assert s[tag]["loadable"] is False
            assert "taken with 64 MiB of RAM, this VM has 96 MiB" in s[tag]["reason"]
        assert s["left"]["machine"]["ram-size"] == 64 << 20
    check_images(tmp_path)


def test_current_survives_qemu_rewriting_the_header(tmp_path):
    """The marker is a qcow2 header extension of snapvm's own: QEMU keeps
    extensions it does not know when it rewrites the header (here: qemu-img
    amend), and qemu-img check finds nothing wrong with it."""
    disks = [Disk("disk0", "qcow2", "64M")]
    with Guest(tmp_path, disks=disks) as g:
        g.qmp.cmd("savevm", tag="a")
        g.qmp.cmd("savevm", tag="b")
        g.qmp.cmd("loadvm", tag="a")
        g.resync()
    path = str(tmp_path / "disk0.qcow2")
    with open(path, "rb") as f:
        header = f.read(4096)
    assert struct.pack(">I", 0x736E564D) in header  # "snVM": the marker's extension type
    subprocess.run(["qemu-img", "amend", "-f", "qcow2", "-o", "lazy_refcounts=on", path],
                   check=True)
    assert qemu_img_check(path) == (0, 0)
    with Guest(tmp_path, disks=disks) as g:
        assert tree(g) == ({"a": None, "b": "a"}, "a")
    subprocess.run(["qemu-img", "snapshot", "-d", "b", path], check=True)
    with Guest(tmp_path, disks=disks) as g:
        assert tree(g) == ({"a": None}, "a")
        g.qmp.cmd("savevm", tag="c")
        assert tree(g) == ({"a": None, "c": "a"}, "c")
    assert qemu_img_check(path) == (0, 0)


@pytest.mark.parametrize("opts", ["cluster_size=512", "compat=0.10", "compat=0.10,cluster_size=512"])
def test_small_clusters_and_version_2_images_keep_the_marker(tmp_path, opts):
    """512-byte clusters leave little room in the header cluster, and qcow2
    version 2 images have a 72-byte header: the marker fits either way."""
    path = tmp_path / "disk0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, str(path), "64M"],
                   check=True)
    disks = [Disk("disk0", "qcow2", "64M")]
    with Guest(tmp_path, disks=disks) as g:
        g.qmp.cmd("savevm", tag="a")
        g.qmp.cmd("savevm", tag="b")
        assert tree(g) == ({"a": None, "b": "a"}, "b")
    assert qemu_img_check(str(path)) == (0, 0)


def test_no_room_for_the_marker_costs_only_current(tmp_path):
    """An overlay with 512-byte clusters whose backing file name fills the
    header cluster has no room for the marker: saves and loads still work,
    the tree is still drawn, only `current` is unknown."""
    sub = tmp_path / ("d" * 200)
    sub.mkdir()
    base = sub / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512",
                    str(base), "64M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512",
                    "-b", str(base), "-F", "qcow2", str(tmp_path / "disk0.qcow2")], check=True)
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "64M")]) as g:
        g.qmp.cmd("savevm", tag="a")
        g.qmp.cmd("savevm", tag="b")
        g.qmp.cmd("loadvm", tag="a")
        g.resync()
        assert tree(g) == ({"a": None, "b": None}, None)
        assert all(s["loadable"] for s in snaps(g).values())
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)
    assert "d" * 200 in subprocess.run(["qemu-img", "info", str(tmp_path / "disk0.qcow2")],
                                       capture_output=True, text=True, check=True).stdout


def make_version_1(path):
    """Turn every snapvm vmstate in a qcow2 file into format version 1 (no
    description), as an older snapvm wrote it: version 1, header CRC-32 of
    bytes [0, 88) at byte 88 -- patched in the host file with snapvm not
    running."""
    import zlib
    data = bytearray(open(path, "rb").read())
    found = 0
    pos = data.find(b"SNAPVMST")
    while pos >= 0:
        if pos % 512 == 0 and struct.unpack_from("<I", data, pos + 8)[0] == 2:
            struct.pack_into("<I", data, pos + 8, 1)
            data[pos + 88:pos + 112] = bytes(24)
            struct.pack_into("<I", data, pos + 88, zlib.crc32(bytes(data[pos:pos + 88])))
            found += 1
        pos = data.find(b"SNAPVMST", pos + 1)
    assert found, "no snapvm vmstate header in the image"
    open(path, "wb").write(bytes(data))


def test_version_1_vmstate_loads_with_the_rules_of_the_command(tmp_path):
    disks = uefi_disks()
    # 4 KiB clusters: nothing to pack, so the save writes version 2, which
    # make_version_1 can turn into 1 (a packed RAM section has no version 1).
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096",
                    str(tmp_path / "root.qcow2"), "64M"], check=True)
    with Guest(tmp_path, disks=disks) as g:
        g.guest.cmd("fill 3 8")
        ram = g.guest.sum()
        g.qmp.cmd("savevm", tag="old", exclude=["vars"])
    make_version_1(str(tmp_path / "root.qcow2"))
    with Guest(tmp_path, disks=disks) as g:
        s = snaps(g)["old"]
        # No record: the default rules judge it, and QMP's error suggests `exclude`.
        assert s["loadable"] is False and "'exclude'" in s["reason"], s
        assert "parent" not in s and "excluded" not in s and s["current"] is False
        out = g.qmp.hmp("loadvm old")
        assert "Device 'vars' is writable but does not support snapshots" in out, out
        assert "exclude" not in out
        expect_error(g.qmp, "loadvm", "'vars'", "'exclude'", tag="old")
        g.guest.cmd("fill 4 8")
        g.qmp.cmd("loadvm", tag="old", exclude=["vars"])
        g.resync()
        assert g.guest.sum() == ram
        # A new snapshot after loading one without a record has no parent.
        g.qmp.cmd("savevm", tag="new", exclude=["vars"])
        assert tree(g) == ({"old": None, "new": None}, "new")
    r = run_snapvm(Guest(tmp_path, disks=disks).args + ["-loadvm", "old", "-serial", "null"])
    assert r.returncode == 1 and "Device 'vars' is writable but does not support snapshots" in \
        r.stderr and "exclude" not in r.stderr, r.stderr
    check_images(tmp_path)


POWERLOSS = os.path.join(os.path.dirname(BLOCKTOOL), "powerloss.so")
CUT_STRIDE = int(os.environ.get("SNAPVM_CRASH_STRIDE", "1"))


def strip_marker(path):
    """Remove the current marker: its type word becomes the end of the
    header extensions (what an image saved before the marker existed has)."""
    data = bytearray(open(path, "rb").read(65536))
    pos = data.find(struct.pack(">I", 0x736E564D))
    while pos >= 0 and pos % 8:
        pos = data.find(struct.pack(">I", 0x736E564D), pos + 1)
    assert pos > 0
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(bytes(8))


def test_power_loss_at_every_write_keeps_the_tree(tmp_path):
    """A power cut between any two writes of loadvm (which adds the current
    marker), savevm (description, marker rewritten) and delvm of the current
    snapshot (marker moved to its parent): every sector written since the
    last flush independently survives or not (tests/block/powerloss.c).
    After each cut the image is clean (leaks at most), every snapshot left
    is complete and loadable, parents are right, and `current` is one of
    the states the sequence passed through."""
    assert os.path.exists(POWERLOSS)
    disks = [Disk("disk0", "qcow2", "64M")]
    img = str(tmp_path / "disk0.qcow2")
    with Guest(tmp_path, disks=disks) as g:
        g.qmp.cmd("savevm", tag="a")
        g.qmp.cmd("savevm", tag="b")
    strip_marker(img)
    pristine = str(tmp_path / "pristine.qcow2")
    shutil.copy(img, pristine)
    n = points = 0
    while True:
        shutil.copy(pristine, img)
        env = dict(os.environ, LD_PRELOAD=POWERLOSS, CRASH_AFTER_WRITES=str(n),
                   CRASH_SEED=str(n * 7919 + 1))
        g = Guest(tmp_path, disks=disks, env=env, wait_ready=False)
        stage = 0  # how many of the three replies came back: what is durable
        try:
            g.start()
            for command, tag in (("loadvm", "a"), ("savevm", "c"), ("delvm", "c")):
                g.qmp.cmd(command, tag=tag)
                stage += 1
        except (AssertionError, OSError, QMPError, EOFError):
            pass  # the cut: the process is gone
        g.stop()
        r = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
        assert r.returncode in (0, 3) and "ERROR" not in r.stdout + r.stderr, (n, r.stdout)
        with Guest(tmp_path, disks=disks) as h:
            parents, current = tree(h)
            assert {"a", "b"} <= set(parents) <= {"a", "b", "c"}, (n, parents)
            assert parents["a"] is None and parents["b"] == "a" and parents.get("c", "a") == "a"
            # Each reply comes after the marker is flushed; a cut in the middle of
            # an operation leaves the state before it or after it, never none.
            allowed = [(None, "a"), ("a", "c"), ("c", "a"), ("a",)][stage]
            assert current in allowed, (n, stage, current)
            assert all(s["loadable"] for s in snaps(h).values()), (n, snaps(h))
        if stage == 3:
            break
        n += CUT_STRIDE
        points += 1
        assert n < 5000
    assert points > 30, points  # the sequence really was cut at many points
    assert current == "a"
