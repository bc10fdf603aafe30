"""Every rule of whole-VM snapshots that ends in an error: the error names
the culprit, and a failed command changes nothing -- no partial snapshot,
no leaked clusters, the guest as it was."""
import subprocess

import pytest

from faultctl import FaultCtl, fault_env
from qmp import QMPError
from snapshot_vm import Disk, Guest, qemu_img_check, qemu_img_snapshots
from vm import run_snapvm

pytestmark = pytest.mark.kvm


def expect_error(qmp, command, *needles, cls="GenericError", **args):
    with pytest.raises(QMPError) as exc:
        qmp.cmd(command, **args)
    assert exc.value.cls == cls, exc.value.desc
    for needle in needles:
        assert needle in exc.value.desc, exc.value.desc
    return exc.value.desc


def ovmf_disks():
    """The seed's OVMF case: a qcow2 root disk and a small writable raw varstore."""
    return [Disk("root", "qcow2", "64M"), Disk("varstore", "raw", "256K", attach=False)]


def test_ovmf_varstore_blocks_plain_savevm(tmp_path):
    with Guest(tmp_path, disks=ovmf_disks()) as g:
        expect_error(g.qmp, "savevm", "'varstore'", "raw", "'exclude'", tag="s")
        assert g.qmp.cmd("query-snapshots") == []
        info = g.qmp.cmd("savevm", tag="s", exclude=["varstore"])
        assert info["vmstate"] == "root" and info["devices"] == ["root"]
        g.guest.cmd("fill 2 4")
        g.qmp.cmd("loadvm", tag="s", exclude=["varstore"])
        # By tag alone the recorded node set is used (issue 11; test_snapshot_describe.py).
        assert g.qmp.cmd("loadvm", tag="s")["devices"] == ["root"]
    assert qemu_img_snapshots(str(tmp_path / "root.qcow2"))["s"]["vm-state-size"] > 0


def test_ovmf_case_with_the_job_api(tmp_path):
    with Guest(tmp_path, disks=ovmf_disks()) as g:
        g.qmp.cmd("snapshot-save", job_id="j1", tag="s", vmstate="root", devices=["root"])
        job = g.wait_job("j1")
        assert "error" not in job, job
        g.qmp.cmd("snapshot-save", job_id="j2", tag="t", vmstate="root",
                  devices=["root", "varstore"])
        job = g.wait_job("j2")
        assert "'varstore'" in job["error"] and "cannot hold snapshots" in job["error"]
        assert [s["tag"] for s in g.qmp.cmd("query-snapshots")] == ["s"]


def test_node_set_errors(tmp_path):
    disks = [Disk("disk0", "qcow2", "64M"), Disk("raw0", "raw", "1M", attach=False)]
    with Guest(tmp_path, disks=disks) as g:
        ex = ["raw0"]
        expect_error(g.qmp, "savevm", "'exclude' names no block node: 'nope'",
                     cls="DeviceNotFound", tag="a", exclude=ex + ["nope"])
        expect_error(g.qmp, "savevm", "all of them are in 'exclude'", tag="a",
                     exclude=ex + ["disk0"])
        expect_error(g.qmp, "savevm", "lists node 'raw0' twice", tag="a", exclude=ex + ["raw0"])
        expect_error(g.qmp, "savevm", "'vmstate' names no block node: 'zz'",
                     cls="DeviceNotFound", tag="a", exclude=ex, vmstate="zz")
        expect_error(g.qmp, "savevm", "vmstate node 'raw0' (raw) cannot hold snapshots", tag="a",
                     exclude=ex, vmstate="raw0")
        expect_error(g.qmp, "savevm", "Parameter 'tag' must not be empty", tag="", exclude=ex)
        for args, needle in [
            ({"devices": []}, "'devices' must name at least one block node"),
            ({"devices": ["disk0", "disk0"]}, "lists node 'disk0' twice"),
            ({"devices": ["disk0"], "vmstate": "raw0"}, "vmstate node 'raw0' (raw)"),
        ]:
            g.qmp.cmd("snapshot-save", job_id="bad", tag="a", vmstate=args.pop("vmstate", "disk0"),
                      **args)
            job = g.wait_job("bad")
            assert needle in job["error"], job
            g.qmp.cmd("job-dismiss", id="bad")
        assert g.qmp.cmd("query-snapshots") == []


def test_existing_tag_is_refused(tmp_path):
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "64M")]) as g:
        g.qmp.cmd("savevm", tag="dup")
        expect_error(g.qmp, "savevm", "Snapshot 'dup' already exists on node 'disk0'", tag="dup")
        g.qmp.cmd("snapshot-save", job_id="j", tag="dup", vmstate="disk0", devices=["disk0"])
        assert "already exists" in g.wait_job("j")["error"]
        assert len(g.qmp.cmd("query-snapshots")) == 1


def test_default_vmstate_never_a_small_node(tmp_path):
    disks = [Disk("vars", "qcow2", "1M", attach=False), Disk("big", "qcow2", "64M"),
             Disk("mid", "qcow2", "32M")]
    with Guest(tmp_path, disks=disks) as g:
        info = g.qmp.cmd("savevm", tag="d")
        assert info["vmstate"] == "big" and info["vmstate-defaulted"]
        expect_error(g.qmp, "savevm", "name one with 'vmstate'", tag="e",
                     exclude=["big", "mid"])
        info = g.qmp.cmd("savevm", tag="e", exclude=["big", "mid"], vmstate="vars")
        assert info["vmstate"] == "vars" and not info["vmstate-defaulted"]


def test_loadvm_refusals_change_nothing(tmp_path):
    disks = [Disk("disk0", "qcow2", "64M"), Disk("disk1", "qcow2", "32M")]
    # A disk-only snapshot made by qemu-img before snapvm runs.
    Guest(tmp_path, disks=disks)
    subprocess.run(["qemu-img", "snapshot", "-c", "diskonly", str(tmp_path / "disk0.qcow2")],
                   check=True)
    subprocess.run(["qemu-img", "snapshot", "-c", "diskonly", str(tmp_path / "disk1.qcow2")],
                   check=True)
    with Guest(tmp_path, disks=disks) as g:
        g.qmp.cmd("savevm", tag="only0", exclude=["disk1"])
        g.guest.cmd("fill 9 8")
        g.guest.cmd("disk write 0 3 3")
        ram, sector = g.guest.sum(), g.sector(0, 3)
        expect_error(g.qmp, "loadvm", "Snapshot 'missing' does not exist on node 'disk0'",
                     tag="missing")
        expect_error(g.qmp, "loadvm", "'diskonly'", "no vmstate", "qemu-img snapshot -c",
                     tag="diskonly")
        # only0 recorded its node set, so by tag alone it would load (issue 11);
        # an explicit set that contradicts the record is refused, naming the node.
        expect_error(g.qmp, "loadvm", "Node 'disk1' was excluded when snapshot 'only0' was saved",
                     tag="only0", exclude=[])
        expect_error(g.qmp, "loadvm", "not part of the snapshot", tag="only0",
                     exclude=["disk1"], vmstate="disk1")
        assert g.qmp.cmd("query-status")["status"] == "running"
        assert g.guest.sum() == ram and g.sector(0, 3) == sector
        entry = {s["tag"]: s for s in g.qmp.cmd("query-snapshots")}
        assert entry["diskonly"]["loadable"] is False and "no vmstate" in entry["diskonly"]["reason"]
        assert entry["only0"]["loadable"] is True and entry["only0"]["excluded"] == ["disk1"]
    for d in ("disk0", "disk1"):
        assert qemu_img_check(str(tmp_path / f"{d}.qcow2")) == (0, 0)


def test_loadvm_into_a_different_vm(tmp_path):
    disks = [Disk("disk0", "qcow2", "64M"), Disk("disk1", "qcow2", "32M")]
    with Guest(tmp_path, disks=disks, mem="64") as g:
        g.qmp.cmd("savevm", tag="s")
    with Guest(tmp_path, disks=disks, mem="96") as g:
        expect_error(g.qmp, "loadvm", "taken with 64 MiB of RAM, this VM has 96 MiB", tag="s")
        assert g.guest.cmd("tick").startswith("tick")
    with Guest(tmp_path, disks=disks, extra=["-smp", "2"]) as g:
        expect_error(g.qmp, "loadvm", "taken with 1 vCPUs, this VM has 2", tag="s")
    # disk1 is still a node (so the tag is found on every node) but no device uses it.
    other = [Disk("disk0", "qcow2", "64M"), Disk("disk1", "qcow2", "32M", attach=False)]
    with Guest(tmp_path, disks=other) as g:
        g.guest.cmd("fill 1 4")
        ram = g.guest.sum()
        desc = expect_error(g.qmp, "loadvm", "has state for device", tag="s")
        assert "which this VM does not have" in desc
        assert g.qmp.cmd("query-status")["status"] == "running"
        assert g.guest.sum() == ram


def test_vmstate_written_by_qemu_is_refused(tmp_path):
    disk = [Disk("disk0", "qcow2", "64M")]
    Guest(tmp_path, disks=disk)
    img = str(tmp_path / "disk0.qcow2")
    r = subprocess.run(["qemu-system-x86_64", "-nodefaults", "-display", "none", "-monitor",
                        "stdio", "-m", "16", "-blockdev",
                        f"driver=qcow2,node-name=d,file.driver=file,file.filename={img}"],
                       input="savevm fromqemu\nquit\n", capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert qemu_img_snapshots(img)["fromqemu"]["vm-state-size"] > 0
    with Guest(tmp_path, disks=disk) as g:
        expect_error(g.qmp, "loadvm", "written by QEMU", "snapvm cannot load it",
                     tag="fromqemu")
        entry = g.qmp.cmd("query-snapshots")[0]
        assert entry["loadable"] is False and "QEMU" in entry["reason"]
        assert g.qmp.cmd("query-status")["status"] == "running"


def test_failed_save_leaves_no_partial_snapshot(tmp_path):
    """disk1 cannot count snapshot references (refcount_bits=1): creating the
    block snapshot fails there after it succeeded on disk0."""
    img1 = str(tmp_path / "disk1.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", img1,
                    "32M"], check=True)
    disks = [Disk("disk0", "qcow2", "64M"), Disk("disk1", "qcow2", "32M")]
    with Guest(tmp_path, disks=disks) as g:
        g.guest.cmd("fill 4 8")
        expect_error(g.qmp, "savevm", "'disk1'", "refcount_bits=1", tag="s")
        assert g.qmp.cmd("query-snapshots") == []
        assert g.qmp.cmd("query-status")["status"] == "running"
    for d in ("disk0", "disk1"):
        path = str(tmp_path / f"{d}.qcow2")
        assert qemu_img_snapshots(path) == {}
        assert qemu_img_check(path) == (0, 0)


def test_delvm_where_it_exists_and_says_where_not(tmp_path):
    disks = [Disk("disk0", "qcow2", "64M"), Disk("disk1", "qcow2", "32M")]
    with Guest(tmp_path, disks=disks) as g:
        g.qmp.cmd("savevm", tag="half", exclude=["disk1"])
        info = g.qmp.cmd("delvm", tag="half")
        assert info == {"tag": "half", "deleted": ["disk0"], "missing": ["disk1"]}
        expect_error(g.qmp, "delvm", "Snapshot 'half' does not exist on any node", tag="half")
        g.qmp.cmd("savevm", tag="half2", exclude=["disk1"])
        assert "was not on: disk1" in g.qmp.hmp("delvm half2")


def test_one_snapshot_operation_at_a_time(tmp_path):
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "2G")], mem="1024") as g:
        g.guest.cmd("fill 1 900", timeout=60)
        g.qmp.cmd("snapshot-save", job_id="long", tag="a", vmstate="disk0", devices=["disk0"])
        other = g.connect()
        desc = expect_error(other, "savevm", tag="b")
        assert desc == "Another snapshot operation is in progress; wait for it to finish"
        job = g.wait_job("long")
        assert "error" not in job
        assert [s["tag"] for s in g.qmp.cmd("query-snapshots")] == ["a"]


def test_tags_are_checked_whole(tmp_path):
    """A 300-byte tag whose first 255 bytes name an existing snapshot, or a
    tag with a control character, is refused by every entry point before
    anything is looked up: nothing is saved, loaded or deleted."""
    t255, t300 = "a" * 255, "a" * 300
    too_long = "Parameter 'tag' is 300 bytes long ('" + "a" * 32 + "...'); " \
               "a snapshot tag holds at most 255"
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "64M")]) as g:
        g.qmp.cmd("savevm", tag=t255)
        g.guest.cmd("disk write 0 5 7")
        sector = g.sector(0, 5)
        for cmd in ("savevm", "loadvm", "delvm"):
            assert expect_error(g.qmp, cmd, tag=t300) == too_long
        for i, job in enumerate(("snapshot-save", "snapshot-load", "snapshot-delete")):
            extra = {} if job == "snapshot-delete" else {"vmstate": "disk0"}
            g.qmp.cmd(job, job_id=f"j{i}", tag=t300, devices=["disk0"], **extra)
            assert g.wait_job(f"j{i}")["error"] == too_long
        for tag, ch, at in (("abc\x01", "\x01", 3), ("\x1fabc", "\x1f", 0),
                            ("abcde\x7f", "\x7f", 5)):
            desc = expect_error(g.qmp, "savevm", tag=tag)
            assert desc == (f"Parameter 'tag' holds the control character 0x{ord(ch):02x} at "
                            f"byte {at}: a snapshot tag must be printable")
        assert [s["tag"] for s in g.qmp.cmd("query-snapshots")] == [t255]
        assert g.sector(0, 5) == sector  # nothing was loaded
    assert list(qemu_img_snapshots(str(tmp_path / "disk0.qcow2"))) == [t255]
    disk = Disk("disk0", "qcow2", "64M")
    r = run_snapvm(["-m", "64", "-serial", "null", *disk.args(tmp_path), "-loadvm", t300],
                   timeout=30)
    assert r.returncode == 1
    assert too_long in r.stderr, r.stderr


@pytest.mark.parametrize("mem_path", [False, True], ids=["mapped", "mem-path"])
def test_a_read_error_anywhere_in_a_load_changes_nothing(tmp_path, mem_path):
    """An EIO at any single read of a load (the vmstate's header and
    records, the cluster map, RAM staged beside guest RAM -- all of RAM
    with -mem-path) fails the load and leaves the guest as it was: running,
    its RAM and disk unchanged.  Reads past the last one: the load works."""
    env = fault_env(tmp_path)
    extra = ["-mem-path", str(tmp_path / "ram")] if mem_path else []
    disks = [Disk("d0", "qcow2", "64M"), Disk("d1", "qcow2", "32M")]
    with Guest(tmp_path, disks=disks, mem="32", extra=extra, env=env) as g:
        ctl = FaultCtl(env["SNAPVM_FAULT_CTL"])
        g.guest.cmd("fill 4 8")
        g.guest.cmd("disk write 0 7 1")
        g.qmp.cmd("savevm", tag="a")
        saved = (g.guest.sum(), g.sector(0, 7))
        ctl.reset()
        g.qmp.cmd("loadvm", tag="a")
        reads = ctl.counts()["read"]
        assert reads > 0
        failed = 0
        for n in range(1, reads + 2):
            g.resync()
            g.guest.cmd(f"fill {10 + n} 8")
            g.guest.cmd(f"disk write 0 7 {10 + n}")
            before = (g.guest.sum(), g.sector(0, 7))
            ctl.arm(f"op=read,nth={n},errno=EIO")
            try:
                g.qmp.cmd("loadvm", tag="a")
                ok = True
            except QMPError as e:
                ok = False
                failed += 1
                assert "Input/output error" in e.desc, e.desc
            ctl.disarm()
            assert g.qmp.cmd("query-status")["status"] == "running"
            g.resync()
            assert (g.guest.sum(), g.sector(0, 7)) == (saved if ok else before), n
        assert failed >= 1
    for d in ("d0", "d1"):
        assert qemu_img_check(str(tmp_path / f"{d}.qcow2")) == (0, 0)


def test_a_disk_that_stays_failing_never_leaves_a_running_half_loaded_guest(tmp_path):
    """From the Nth write of a loadvm on, every write fails (a disk gone bad,
    count=0), so that even undoing can fail.  Each time, either the guest
    goes on as it was (running, RAM and disk unchanged), or it is stopped as
    docs/snapshots.md says: status restore-vm, running false, a STOP event,
    an error saying "half-loaded", cont refused.  Never a half-loaded guest
    that runs.  Afterwards the images are sound and the snapshot loads."""
    env = fault_env(tmp_path)
    disks = [Disk("d0", "qcow2", "16M"), Disk("d1", "qcow2", "16M")]
    outcomes = {"unchanged": 0, "loaded": 0, "stopped": 0}
    with Guest(tmp_path, disks=disks, mem="16", env=env) as g:
        ctl = FaultCtl(env["SNAPVM_FAULT_CTL"])
        g.guest.cmd("fill 4 2")
        g.guest.cmd("disk write 1 3 1")
        g.qmp.cmd("savevm", tag="a")
        saved = (g.guest.sum(), g.sector(1, 3))
        ctl.reset()
        g.qmp.cmd("loadvm", tag="a")
        writes = ctl.counts()["write"]
        assert writes > 0
        for n in range(1, writes + 2):
            g.resync()
            g.guest.cmd(f"fill {20 + n} 2")
            g.guest.cmd(f"disk write 1 3 {20 + n}")
            before = (g.guest.sum(), g.sector(1, 3))
            g.qmp.clear_events()
            ctl.arm(f"op=write,nth={n},count=0,errno=EIO")
            try:
                g.qmp.cmd("loadvm", tag="a")
                err = None
            except QMPError as e:
                err = e.desc
            status = g.qmp.cmd("query-status")
            if err and "half-loaded" in err:
                outcomes["stopped"] += 1
                assert status == {"running": False, "singlestep": False,
                                  "status": "restore-vm"}, (n, err)
                assert g.qmp.event("STOP", timeout=5)
                assert "half-loaded" in expect_error(g.qmp, "cont")
                ctl.disarm()
                break  # a node that could not be put back refuses writes until reopened
            ctl.disarm()
            assert status["status"] == "running", (n, err, status)
            g.resync()
            if err:
                outcomes["unchanged"] += 1
                assert (g.guest.sum(), g.sector(1, 3)) == before, (n, err)
            else:
                outcomes["loaded"] += 1
        assert outcomes["unchanged"] >= 1, outcomes
        print(outcomes)
    for d in ("d0", "d1"):
        assert qemu_img_check(str(tmp_path / f"{d}.qcow2"))[0] == 0
    with Guest(tmp_path, disks=disks, mem="16") as g:
        g.qmp.cmd("loadvm", tag="a")
        assert g.qmp.cmd("query-status")["status"] == "running"
        g.resync()
        assert (g.guest.sum(), g.sector(1, 3)) == saved


def test_replacing_a_tag_under_a_write_error_keeps_the_old_or_the_new(tmp_path):
    """HMP savevm of an existing tag, with the Nth write failing (EIO): the
    old snapshot is replaced at the same commit point that adds the new one,
    so afterwards the tag exists on every node, and loads either the state
    it had (the save failed) or the new one (it succeeded) -- never nothing."""
    env = fault_env(tmp_path)
    disks = [Disk("d0", "qcow2", "16M"), Disk("d1", "qcow2", "16M")]
    with Guest(tmp_path, disks=disks, mem="16", env=env) as g:
        ctl = FaultCtl(env["SNAPVM_FAULT_CTL"])

        def new_state(seed):
            g.guest.cmd(f"fill {seed} 2")
            g.guest.cmd(f"disk write 1 3 {seed}")
            return (g.guest.sum(), g.sector(1, 3))

        good = new_state(1)
        assert g.qmp.hmp("savevm a") == ""
        ctl.reset()
        good = new_state(2)
        assert g.qmp.hmp("savevm a") == ""
        writes = ctl.counts()["write"]
        failed = 0
        for n in list(range(1, writes + 1, 3)) + [writes + 1]:
            state = new_state(10 + n)
            ctl.arm(f"op=write,nth={n},errno=EIO")
            out = g.qmp.hmp("savevm a")
            ctl.disarm()
            if out:
                failed += 1
                assert out.startswith("Error: ") and "Input/output error" in out, (n, out)
            else:
                good = state
            snaps = g.qmp.cmd("query-snapshots")
            assert [(s["tag"], sorted(s["nodes"])) for s in snaps] == [("a", ["d0", "d1"])], \
                (n, out, snaps)
            g.qmp.cmd("loadvm", tag="a")
            g.resync()
            assert (g.guest.sum(), g.sector(1, 3)) == good, (n, out)
        assert failed >= 1
    for d in ("d0", "d1"):
        assert qemu_img_check(str(tmp_path / f"{d}.qcow2"))[0] == 0



def test_a_torn_snapshot_is_refused(tmp_path):
    """A tag whose snapshots on the nodes were not taken at one instant (a
    save that died between two nodes' commits; here: qemu-img replaced one
    disk's) would load disks from different times: refused, naming the node,
    and nothing changes."""
    disks = [Disk("d0", "qcow2", "64M"), Disk("d1", "qcow2", "32M")]
    with Guest(tmp_path, disks=disks) as g:
        g.qmp.cmd("savevm", tag="a")
    d1 = str(tmp_path / "d1.qcow2")
    subprocess.run(["qemu-img", "snapshot", "-d", "a", d1], check=True)
    subprocess.run(["qemu-img", "snapshot", "-c", "a", d1], check=True)
    with Guest(tmp_path, disks=disks) as g:
        g.guest.cmd("disk write 1 4 9")
        sector = g.sector(1, 4)
        desc = expect_error(g.qmp, "loadvm", tag="a")
        assert desc.startswith("Snapshot 'a' on node 'd1' was not taken at the same instant as "
                               "the one on node 'd0' (vm-clock 0 ns, not "), desc
        assert "the snapshot is torn" in desc, desc
        entry = {s["tag"]: s for s in g.qmp.cmd("query-snapshots")}["a"]
        assert entry["loadable"] is False and entry["reason"] == desc, entry
        assert g.qmp.cmd("query-status")["status"] == "running"
        assert g.sector(1, 4) == sector
