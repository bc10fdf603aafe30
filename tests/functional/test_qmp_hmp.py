"""HMP arguments behind human-monitor-command: parsed as QEMU's monitor
parses them (words, "quoted strings"), and checked whole: a tag is never cut
to fit, and a bad one is refused before anything is done."""
import os
import re
import subprocess
import time

import pytest

from qmp import QMP, SnapVM
from snapshot_vm import Disk, Guest, qemu_img_check

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def g(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hmp")
    with Guest(tmp, disks=[Disk("disk0", "qcow2", "64M")]) as g:
        yield g
    assert qemu_img_check(str(tmp / "disk0.qcow2")) == (0, 0)


def tags(g):
    return sorted(s["tag"] for s in g.qmp.cmd("query-snapshots"))


def test_over_long_tags_are_refused_not_cut(g):
    t255 = "t" * 255
    assert g.qmp.hmp(f"savevm {t255}") == ""
    assert tags(g) == [t255]
    long = t255 + "x" * 45  # its first 255 characters name the snapshot above
    for cmd in ("savevm", "loadvm", "delvm"):
        out = g.qmp.hmp(f"{cmd} {long}")
        assert out == (f"Error: {cmd}: the tag is 300 bytes long; "
                       "a snapshot tag holds at most 255\r\n")
    assert tags(g) == [t255]  # nothing saved over it, nothing deleted
    assert g.qmp.hmp(f"delvm {t255}") == ""
    assert tags(g) == []


@pytest.mark.parametrize("ch", ["\x01", "\x1b", "\x7f", "\t"])
def test_control_characters_in_tags_are_refused(g, ch):
    out = g.qmp.hmp(f'savevm "a{ch}b"')
    assert out == (f"Error: savevm: the tag holds the control character 0x{ord(ch):02x} "
                   "at offset 1\r\n")
    assert tags(g) == []


def test_quoted_tags_and_argument_errors(g):
    assert g.qmp.hmp(r'savevm "two words \"q\""') == ""
    assert tags(g) == ['two words "q"']
    def bad(cmd, what):  # QEMU's parse error, marked as an error
        return f'Error: {cmd}: {what}\r\nTry "help {cmd}" for more information\r\n'
    assert g.qmp.hmp("savevm two words") == bad("savevm", "extraneous characters at the end of line")
    assert g.qmp.hmp('loadvm "open') == bad("loadvm", "unterminated string")
    assert g.qmp.hmp(r'loadvm "a\q"') == bad("loadvm", "unsupported escape code: '\\q'")
    assert g.qmp.hmp("loadvm") == bad("loadvm", "string expected")
    assert g.qmp.hmp("delvm   ") == bad("delvm", "string expected")
    assert tags(g) == ['two words "q"']
    assert g.qmp.hmp(r'delvm "two words \"q\""') == ""
    assert tags(g) == []


# ---- the HMP commands' output, as QEMU 7.2 prints it ----

def test_info_lists_its_subcommands_and_help_format():
    with SnapVM(extra_args=["-S", "-name", "n1"]) as vm:
        lines = vm.qmp.hmp("info").split("\r\n")
        assert lines[-1] == ""
        names = [l.split(" -- ")[0] for l in lines[:-1]]
        assert names == sorted(names)
        # QEMU's "NAME PARAMS -- HELP": two blanks before "--" when there are no params
        assert {"info status ", "info version ", "info snapshots ", "info name "} <= set(names)
        assert "info status  -- show the current VM status (running|paused)" in lines
        assert all(n.startswith("info ") for n in names)
        assert vm.qmp.hmp("help savevm").startswith("savevm tag -- save a VM snapshot. ")
        assert vm.qmp.hmp("info name") == "n1\r\n"
        v = vm.qmp.cmd("query-version")
        q = v["qemu"]
        assert vm.qmp.hmp("info version") == f"{q['major']}.{q['minor']}.{q['micro']}{v['package']}\r\n"
        assert vm.qmp.hmp("info status") == "VM status: paused (prelaunch)\r\n"
        vm.qmp.cmd("cont")
        assert vm.qmp.hmp("info status") == "VM status: running\r\n"
        vm.qmp.cmd("stop")
        assert vm.qmp.hmp("info status") == "VM status: paused\r\n"
    with SnapVM(extra_args=["-S"]) as vm:
        assert vm.qmp.hmp("info name") == ""


HEADER = "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT"
ROW = re.compile(r"^(\S+) +(\S+) +([\d.]+ [KMGT]?i?B) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) "
                 r"(\d\d:\d\d:\d\d\.\d{3}) +(\d*)$")


def test_info_snapshots_sections(tmp_path):
    disks = [Disk("disk0", "qcow2", "64M"), Disk("disk1", "qcow2", "64M")]
    g = Guest(tmp_path, disks=disks)
    assert g.start().qmp.hmp("info snapshots") == "There is no snapshot available.\r\n"
    g.stop()
    subprocess.run(["qemu-img", "snapshot", "-c", "onlya", disks[0].path(tmp_path)], check=True)
    with Guest(tmp_path, disks=disks) as g:
        out = g.qmp.hmp("info snapshots")
        assert out == ("List of snapshots present on all disks:\r\nNone\r\n\r\n"
                       "List of partial (non-loadable) snapshots on 'disk0':\r\n"
                       f"{HEADER}\r\n" + out.split("\r\n")[5] + "\r\n")
        g.qmp.hmp("savevm s1")
        g.qmp.hmp("savevm s2")
        lines = g.qmp.hmp("info snapshots").split("\r\n")
        assert lines[:2] == ["List of snapshots present on all disks:", HEADER]
        rows = [ROW.match(l) for l in lines[2:4]]
        assert [(r.group(1), r.group(2)) for r in rows] == [("--", "s1"), ("--", "s2")]
        listed = {s["tag"]: s for s in g.qmp.cmd("query-snapshots")}
        for r in rows:
            s = listed[r.group(2)]
            assert r.group(4) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["date-sec"]))
            ms = s["vm-clock-nsec"] // 1000000
            assert r.group(5) == "%02d:%02d:%02d.%03d" % (ms // 3600000, ms // 60000 % 60,
                                                          ms // 1000 % 60, ms % 1000)
            assert r.group(6) == ""  # no record/replay: no icount
        assert lines[4:7] == ["", "List of partial (non-loadable) snapshots on 'disk0':", HEADER]
        assert ROW.match(lines[7]).group(1, 2) == ("1", "onlya")
        assert lines[8:] == [""]


def test_info_snapshots_table_is_qemus(tmp_path):
    """QEMU 7.2 itself is the oracle: the same image's table, line for line (the
    partial section of a qemu-img snapshot aside, see below)."""
    disk = Disk("disk0", "qcow2", "64M")
    with Guest(tmp_path, disks=[disk]) as g:
        g.qmp.hmp("savevm by-snapvm")
        ours = g.qmp.hmp("info snapshots").split("\r\n")
    sock = str(tmp_path / "qemu.sock")
    qemu = subprocess.Popen(["qemu-system-x86_64", "-machine", "none", "-S", "-nodefaults",
                             "-display", "none", "-blockdev",
                             f"driver=qcow2,node-name=disk0,file.driver=file,"
                             f"file.filename={disk.path(tmp_path)}",
                             "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            assert qemu.poll() is None and time.monotonic() < deadline, qemu.stderr.read()
            time.sleep(0.05)
        with QMP(sock) as q:
            theirs = q.hmp("info snapshots").split("\r\n")
            q.cmd("quit")
    finally:
        qemu.wait(timeout=20)
    assert ours == theirs
    assert ours[:2] == ["List of snapshots present on all disks:", HEADER]
    assert ROW.match(ours[2]).group(1, 2) == ("--", "by-snapvm")


def test_quit_replies_before_shutdown():
    """As QEMU: the reply to quit, then the SHUTDOWN event."""
    with SnapVM(extra_args=["-S"]) as vm:
        vm.qmp.send({"execute": "quit", "id": "q"})
        first = vm.qmp._read_message()
        second = vm.qmp._read_message()
        assert first == {"return": {}, "id": "q"}
        assert second["event"] == "SHUTDOWN"
        assert vm.proc.wait(timeout=10) == 0


def test_info_snapshots_with_a_varstore_left_out(tmp_path):
    """The UEFI case: a snapshot that leaves the raw varstore out by design loads
    by tag alone, so it is listed with the whole ones, not as partial."""
    disks = [Disk("disk0", "qcow2", "64M"), Disk("vars", "raw", "1M", attach=False)]
    with Guest(tmp_path, disks=disks) as g:
        g.qmp.cmd("savevm", tag="a", exclude=["vars"])
        lines = g.qmp.hmp("info snapshots").split("\r\n")
        assert lines[:2] == ["List of snapshots present on all disks:", HEADER]
        assert ROW.match(lines[2]).group(1, 2) == ("--", "a")
        assert lines[3:] == [""]  # no partial section
