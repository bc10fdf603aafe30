"""snapvm-ctl, the command-line client, against a real snapvm on real KVM over
real sockets: every command, its help, its errors (the server's message
unchanged), the plain, --json and terminal (pseudo-terminal) progress of
snapshot jobs, and the interactive shell under a pseudo-terminal."""
import fcntl
import json
import os
import pathlib
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import time

import pytest

from qmp import ROOT, SnapVM
from snapshot_vm import Disk, Guest, qemu_img_check, qemu_img_snapshots

pytestmark = pytest.mark.kvm
CTL = os.path.join(ROOT, os.environ.get("SNAPVM_BUILD") or "build", "snapvm-ctl")
COMMANDS = ["status", "stop", "cont", "quit", "snapshot-create", "snapshot-list",
            "snapshot-revert", "snapshot-delete", "snapshot-info", "nodes", "events", "qmp",
            "hmp", "shell", "help"]


def ctl(*args, env=None, timeout=30):
    e = dict(os.environ)
    e.pop("SNAPVM_QMP", None)
    e.update(env or {})
    return subprocess.run([CTL, *args], capture_output=True, text=True, timeout=timeout, env=e,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def vm():
    with SnapVM(extra_args=["-S"]) as vm:
        yield vm


def disks():
    # a qcow2 disk and a writable raw varstore, as a UEFI VM has
    return [Disk("disk0", "qcow2", "64M"), Disk("vars", "raw", "1M", attach=False)]


@pytest.fixture
def guest(tmp_path):
    g = Guest(tmp_path, disks=disks(), mem="128", extra=["-append", "tick_ms=50"]).start()
    yield g
    g.stop()


def sock(g):
    return f"unix:{g.sock}"


# ---- raw QMP (the old interface, kept) ----

def test_prints_return_as_json(vm):
    r = ctl("-s", f"unix:{vm.sock}", "query-status")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"running": False, "singlestep": False, "status": "prelaunch"}
    r = ctl("-c", "-s", f"unix:{vm.sock}", "query-jobs")
    assert r.stdout == "[]\n"
    r = ctl("--qmp", vm.sock, "-c", "qmp", "query-jobs")
    assert r.stdout == "[]\n"


def test_key_value_arguments_are_typed_by_the_schema(vm):
    r = ctl("-s", f"unix:{vm.sock}", "qmp", "human-monitor-command", "command-line=info status")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "VM status: paused (prelaunch)\r\n"
    # "on" becomes true where the schema wants a boolean
    r = ctl("-s", f"unix:{vm.sock}", "qmp", "query-named-block-nodes", "flat=on")
    assert r.returncode == 0, r.stderr
    # a string argument stays a string even if it looks like a number
    r = ctl("-s", f"unix:{vm.sock}", "qmp", "job-cancel", "id=123")
    assert r.returncode == 1
    assert r.stderr == "GenericError: Job '123' not found\n"
    # an array from a comma list
    r = ctl("-s", f"unix:{vm.sock}", "qmp", "savevm", "tag=x", "exclude=a,b")
    assert r.returncode == 1
    assert r.stderr == "DeviceNotFound: 'exclude' names no block node: 'a'\n"


def test_json_arguments(vm):
    r = ctl("-s", f"unix:{vm.sock}", "qmp", "human-monitor-command",
            '{"command-line": "info status", "cpu-index": 0}')
    assert r.returncode == 0, r.stderr
    assert "prelaunch" in json.loads(r.stdout)
    r = ctl("-s", f"unix:{vm.sock}", "qmp", "query-status", "{not json")
    assert r.returncode == 2 and "not a JSON object" in r.stderr


def test_errors_exit_1_with_class_and_desc(vm):
    r = ctl("-s", f"unix:{vm.sock}", "no-such-command")
    assert r.returncode == 1
    assert r.stderr == "CommandNotFound: The command no-such-command has not been found\n"
    assert r.stdout == ""
    r = ctl("-s", f"unix:{vm.sock}", "job-cancel")
    assert r.returncode == 1
    assert r.stderr == "GenericError: Parameter 'id' is missing\n"
    r = ctl("-s", f"unix:{vm.sock}", "--json", "qmp", "job-cancel")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"error": {"class": "GenericError",
                                              "desc": "Parameter 'id' is missing"}}


# ---- connection and usage ----

def test_usage_and_connection_errors(tmp_path, vm):
    r = ctl("status")
    assert r.returncode == 2 and "no QMP socket: give --qmp ADDRESS or set SNAPVM_QMP" in r.stderr
    r = ctl("-s", f"unix:{tmp_path}/none.sock", "status")
    assert r.returncode == 2
    assert r.stderr.startswith(f"snapvm-ctl: cannot connect to unix:{tmp_path}/none.sock: ")
    r = ctl("--qmp", f"{tmp_path}/none.sock", "status")
    assert r.returncode == 2 and f"unix:{tmp_path}/none.sock" in r.stderr
    r = ctl()
    assert r.returncode == 2 and "a COMMAND is required" in r.stderr and "usage:" in r.stderr
    r = ctl("--bogus", "status")
    assert r.returncode == 2 and "unknown option '--bogus'" in r.stderr
    r = ctl("--qmp")
    assert r.returncode == 2 and "needs an argument" in r.stderr
    for cmd in ("snapshot-create", "snapshot-revert", "snapshot-delete", "snapshot-info"):
        r = ctl("--qmp", vm.sock, cmd)
        assert r.returncode == 2, cmd
        assert r.stderr == f"snapvm-ctl: {cmd}: a snapshot TAG is required " \
                           f"(snapvm-ctl {cmd} --help)\n"
    r = ctl("--qmp", vm.sock, "snapshot-delete", "t", "--vmstate", "disk0")
    assert r.returncode == 2 and "--vmstate does not apply" in r.stderr
    r = ctl("--qmp", vm.sock, "status", "extra")
    assert r.returncode == 2 and "unexpected argument 'extra'" in r.stderr
    r = ctl("--qmp", vm.sock, "events", "--count", "x")
    assert r.returncode == 2 and "--count wants a positive number" in r.stderr


def test_address_forms_and_environment(vm):
    for addr in (vm.sock, f"unix:{vm.sock}"):
        r = ctl("--qmp", addr, "status")
        assert (r.returncode, r.stdout) == (0, "VM status: paused (prelaunch)\n"), r.stderr
    r = ctl("status", env={"SNAPVM_QMP": vm.sock})
    assert r.returncode == 0 and "prelaunch" in r.stdout


def test_tcp(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with SnapVM(extra_args=["-S"], qmp_specs=[f"tcp:127.0.0.1:{port},server=on,wait=off"]):
        r = ctl("-s", f"tcp:127.0.0.1:{port}", "query-version")
        assert r.returncode == 0, r.stderr
        assert "qemu" in json.loads(r.stdout)
        r = ctl("--qmp", f"127.0.0.1:{port}", "status")
        assert r.returncode == 0 and "prelaunch" in r.stdout, r.stderr


# ---- help ----

def test_program_help_lists_every_command():
    r = ctl("--help")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("usage: snapvm-ctl [--qmp ADDRESS] [--json] [-c] COMMAND")
    listed = re.findall(r"^  ([a-z-]+)  +\S", r.stdout.split("commands:\n")[1], re.M)
    assert listed == COMMANDS
    assert ctl("help").stdout == r.stdout
    assert ctl("--version").stdout == "snapvm-ctl version 0.1.0\n"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_of_every_command(cmd):
    # no socket needed, nothing is sent
    r = ctl(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: snapvm-ctl [OPTIONS] {cmd}")
    assert f"\n\n{cmd}: " in r.stdout
    assert ctl("help", cmd).stdout == r.stdout
    assert ctl(cmd, "-h").stdout == r.stdout


# ---- machine commands and events ----

def test_status_stop_cont_and_events(guest):
    assert ctl("--qmp", sock(guest), "status").stdout == "VM status: running\n"
    events = subprocess.Popen([CTL, "--qmp", sock(guest), "events", "--count", "2"],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)  # let it connect
    r = ctl("--qmp", sock(guest), "stop")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert ctl("--qmp", sock(guest), "status").stdout == "VM status: paused\n"
    assert json.loads(ctl("--qmp", sock(guest), "--json", "status").stdout)["status"] == "paused"
    r = ctl("--qmp", sock(guest), "cont")
    assert r.returncode == 0
    out, _ = events.communicate(timeout=10)
    assert events.returncode == 0
    lines = out.splitlines()
    assert [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} ", "", ln) for ln in lines] == \
        ["STOP", "RESUME"], out
    # --json and a filter on the event name
    events = subprocess.Popen([CTL, "--qmp", sock(guest), "--json", "events", "--count", "1",
                               "resume"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    ctl("--qmp", sock(guest), "stop")
    ctl("--qmp", sock(guest), "cont")
    out, _ = events.communicate(timeout=10)
    ev = json.loads(out)
    assert ev["event"] == "RESUME" and "seconds" in ev["timestamp"]


def test_quit_ends_snapvm_and_events_sees_it(guest):
    events = subprocess.Popen([CTL, "--qmp", sock(guest), "events"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    r = ctl("--qmp", sock(guest), "quit")
    assert r.returncode == 0, r.stderr
    assert guest.guest.proc.wait(timeout=10) == 0
    out, err = events.communicate(timeout=10)
    assert events.returncode == 0
    assert out.rstrip().endswith("SHUTDOWN {\"guest\":false,\"reason\":\"host-qmp-quit\"}"), out
    assert "closed the connection" in err


# ---- snapshots ----

def returns_member(qmp, command, member):
    """Whether the elements `command` returns declare `member` (the schema)."""
    schema = {i["name"]: i for i in qmp.cmd("query-qmp-schema")}
    ret = schema[schema[command]["ret-type"]]
    if ret["meta-type"] == "array":
        ret = schema[ret["element-type"]]
    return any(m["name"] == member for m in ret.get("members", []))


def info_of(text):
    """snapshot-info's "key:  value" lines (continuation lines left out)."""
    return dict(m.groups() for m in re.finditer(r"^(\S[^:]*):\s+(.*)$", text, re.M))


def varstore_error(g):
    """The server's own message when savevm meets the raw varstore."""
    with pytest.raises(Exception) as e:
        g.qmp.cmd("savevm", tag="probe")
    return e.value.desc


def test_create_fails_with_the_servers_message_unchanged(guest):
    want = varstore_error(guest)
    assert "Node 'vars' (raw, " in want and "'exclude'" in want
    r = ctl("--qmp", sock(guest), "snapshot-create", "s1")
    assert r.returncode == 1
    assert r.stderr == f"snapvm-ctl: {want}\n"
    # the plain progress lines show the job's life, and nothing was created
    assert "saving 's1': created\n" in r.stdout and "saving 's1': concluded\n" in r.stdout
    assert "Created" not in r.stdout
    assert guest.qmp.cmd("query-snapshots") == []
    assert guest.qmp.cmd("query-jobs") == []  # dismissed
    r = ctl("--qmp", sock(guest), "--json", "snapshot-create", "s1")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"error": {"class": "GenericError", "desc": want}}
    # an unknown node in --exclude: the server's words too
    r = ctl("--qmp", sock(guest), "snapshot-create", "s1", "--exclude", "nosuch")
    assert r.returncode == 1
    assert r.stderr == "snapvm-ctl: 'exclude' names no block node: 'nosuch'\n"


def test_create_list_info_revert_delete(guest, tmp_path):
    q = sock(guest)
    assert guest.guest.cmd("fill 7 16") == "ok"
    before = guest.guest.sum()
    r = ctl("--qmp", q, "snapshot-create", "s1", "--exclude", "vars")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # plain lines (stdout is a pipe): the job's statuses in order, bytes, a summary
    statuses = [ln.split(": ", 1)[1] for ln in lines
                if re.match(r"^saving 's1': [a-z]+$", ln)]
    assert statuses == ["created", "running", "waiting", "pending", "concluded"], r.stdout
    assert any(re.match(r"^saving 's1': [\d.]+ [KMG]?i?B / [\d.]+ [KMG]iB \(\d+%\)", ln)
               for ln in lines), r.stdout
    assert re.match(r"^Created snapshot 's1' in \d+\.\d\ds: VM state [\d.]+ MiB(?: on disk0)?, "
                    r"nodes disk0$", lines[-1]), lines[-1]
    assert "s1" in qemu_img_snapshots(guest.disks[0].path(guest.tmp))

    # --json: one document with the job and the snapshot
    r = ctl("--qmp", q, "--json", "snapshot-create", "s2", "--exclude=vars", "--vmstate", "disk0")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tag"] == "s2" and out["job"]["status"] == "concluded"
    assert out["job"]["type"] == "snapshot-save"
    assert out["job"]["current-progress"] == out["job"]["total-progress"] > 0
    assert out["snapshot"]["nodes"] == ["disk0"]

    # the table
    r = ctl("--qmp", q, "snapshot-list")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert re.split(r"\s{2,}", rows[0]) == ["TAG", "ID", "DATE", "VM SIZE", "STORED", "VM CLOCK",
                                            "NODES", "LOADABLE", "CURRENT"]
    listed = guest.qmp.cmd("query-snapshots")
    assert [row.split()[0] for row in rows[1:]] == [s["tag"] for s in listed] == ["s1", "s2"]
    # STORED: the note says when the server does not declare the member at all;
    # a row shows '-' exactly when its snapshot has no count
    declared = returns_member(guest.qmp, "query-snapshots", "stored-bytes")
    assert ("STORED '-'" in r.stderr) == (not declared), r.stderr
    for row, s in zip(rows[1:], listed):
        cells = re.split(r"\s{2,}", row)
        assert cells[:3] == [s["tag"], s["id"], cells[2]] and cells[6] == "disk0", cells
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", cells[2])
        assert re.match(r"^\d\d:\d\d:\d\d\.\d{3}$", cells[5])
        if "stored-bytes" in s:
            assert re.match(r"^[\d.]+ (B|KiB|MiB|GiB)$", cells[4]), cells
        else:
            assert cells[4] == "-"
    assert json.loads(ctl("--qmp", q, "--json", "snapshot-list").stdout) == listed

    # info
    r = ctl("--qmp", q, "snapshot-info", "s1")
    assert r.returncode == 0, r.stderr
    info = info_of(r.stdout)
    assert info["tag"] == "s1" and info["nodes"] == "disk0"
    assert info["vm size"].endswith(f"({listed[0]['vm-state-size']} bytes)")
    assert info["on disk0"].startswith("id 1, VM state ")
    js = json.loads(ctl("--qmp", q, "--json", "snapshot-info", "s1").stdout)
    assert js["tag"] == "s1" and js["node-records"][0]["node"] == "disk0"
    r = ctl("--qmp", q, "snapshot-info", "nosuch")
    assert (r.returncode, r.stderr) == (1, "snapvm-ctl: No snapshot 'nosuch' "
                                           "(snapshot-list shows the tags)\n")

    # revert brings RAM back
    assert guest.guest.cmd("fill 8 16") == "ok"
    assert guest.guest.sum() != before
    r = ctl("--qmp", q, "snapshot-revert", "s1", "--exclude", "vars")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("Reverted to snapshot 's1' in ")
    guest.resync()
    assert guest.guest.sum() == before
    r = ctl("--qmp", q, "snapshot-revert", "nosuch", "--exclude", "vars")
    assert r.returncode == 1 and "nosuch" in r.stderr

    # delete
    r = ctl("--qmp", q, "snapshot-delete", "s2", "--exclude", "vars")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("Deleted snapshot 's2' in ")
    assert [s["tag"] for s in guest.qmp.cmd("query-snapshots")] == ["s1"]
    assert "s2" not in qemu_img_snapshots(guest.disks[0].path(guest.tmp))

    # nodes: the qcow2 node holds one snapshot, the varstore none
    r = ctl("--qmp", q, "nodes")
    assert r.returncode == 0, r.stderr
    head, *rows = r.stdout.splitlines()
    assert re.split(r"\s{2,}", head) == ["NODE", "DRIVER", "SIZE", "ACCESS", "SNAPSHOTS",
                                         "VM STATE", "FILE"]
    by = {row.split()[0]: row.split() for row in rows}
    assert by["disk0"][1:5] == ["qcow2", "64", "MiB", "rw"] and by["disk0"][5] == "1"
    assert by["vars"][1:5] == ["raw", "1", "MiB", "rw"] and by["vars"][5] == "-"
    assert json.loads(ctl("--qmp", q, "--json", "nodes").stdout) == \
        guest.qmp.cmd("query-named-block-nodes")
    guest.stop()
    assert qemu_img_check(guest.disks[0].path(guest.tmp)) == (0, 0)


def test_tree_and_the_description_record(guest):
    q = sock(guest)
    for tag in ("a", "b"):
        assert ctl("--qmp", q, "snapshot-create", tag, "--exclude", "vars").returncode == 0
    # by tag alone: the snapshot's own record names its nodes (vars excluded)
    assert ctl("--qmp", q, "snapshot-revert", "a").returncode == 0
    assert ctl("--qmp", q, "snapshot-create", "c", "--exclude", "vars").returncode == 0
    assert ctl("--qmp", q, "snapshot-create", "d", "--exclude", "vars").returncode == 0
    r = ctl("--qmp", q, "snapshot-list", "--tree")
    assert r.returncode == 0, r.stderr
    assert "parents" not in r.stderr and "current" not in r.stderr
    lines = r.stdout.splitlines()
    date = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  [\d.]+ MiB"
    # b and c are children of a; d (saved after c) is current
    assert len(lines) == 4, r.stdout
    assert re.match(rf"^a  {date}$", lines[0])
    assert re.match(rf"^├── b  {date}$", lines[1])
    assert re.match(rf"^└── c  {date}$", lines[2])
    assert re.match(rf"^    └── d  {date}  <- current$", lines[3])
    # the table marks the current one
    rows = {ln.split()[0]: ln for ln in ctl("--qmp", q, "snapshot-list").stdout.splitlines()[1:]}
    assert rows["d"].rstrip().endswith("*") and not rows["a"].rstrip().endswith("*")
    info = info_of(ctl("--qmp", q, "snapshot-info", "a").stdout)
    assert (info["parent"], info["children"], info["current"]) == ("(none: a root)", "b, c", "no")
    assert (info["excluded"], info["vmstate node"]) == ("vars", "disk0")
    assert info["machine"] == "128 MiB RAM, 1 vCPU"
    out = ctl("--qmp", q, "snapshot-info", "a").stdout
    assert re.search(r"^devices:\s+serial0 \(serial\)$", out, re.M)
    assert re.search(r"^\s+virtio-blk:disk0 \(virtio-blk-pci on disk0\)$", out, re.M)
    info = info_of(ctl("--qmp", q, "snapshot-info", "d").stdout)
    assert (info["parent"], info["children"], info["current"]) == ("c", "(none)", "yes")
    # deleting c reconnects d to a
    assert ctl("--qmp", q, "snapshot-delete", "c").returncode == 0
    lines = ctl("--qmp", q, "snapshot-list", "--tree").stdout.splitlines()
    assert [re.sub(r"  \d{4}.*?MiB", "", ln) for ln in lines] == \
        ["a", "├── b", "└── d  <- current"]


def set_winsize(fd, cols, rows=24):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_progress_on_a_terminal(tmp_path):
    with Guest(tmp_path, disks=disks(), mem="256") as g:
        assert g.guest.cmd("fill 3 192") == "ok"  # RAM that has to be written
        pid, fd = pty.fork()
        if pid == 0:
            set_winsize(0, 120)
            os.execv(CTL, [CTL, "--qmp", g.sock, "snapshot-create", "t", "--exclude", "vars"])
        out = b""
        while True:
            r, _, _ = select.select([fd], [], [], 30)
            assert r, f"no output: {out!r}"
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        text = out.decode()
        assert os.WEXITSTATUS(status) == 0, text
        frames = text.split("\r\x1b[K")[1:]
        assert len(frames) >= 2, text  # redrawn in place
        bars = [f for f in frames if re.match(r"^saving 't' \[[#.]{24}\] +\d+%  ", f)]
        assert bars, text
        last = bars[-1].split("\r\n")[0]
        assert re.search(r"\[#{24}\] 100%  [\d.]+ MiB / [\d.]+ MiB  [\d.]+ [KMG]iB/s  \d+s left$",
                         last), last
        # no plain status lines on a terminal (a status is drawn in place until
        # bytes are known); the summary after the bar
        assert "saving 't': running\r\n" not in text
        assert re.search(r"\r\nCreated snapshot 't' in \d+\.\d\ds", text), text
        assert [s["tag"] for s in g.qmp.cmd("query-snapshots")] == ["t"]


def test_hmp(vm):
    r = ctl("--qmp", vm.sock, "hmp", "info", "status")
    assert (r.returncode, r.stdout) == (0, "VM status: paused (prelaunch)\n")
    # HMP's errors are text, as QEMU's: printed on stderr, exit 1
    r = ctl("--qmp", vm.sock, "hmp", "loadvm")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.startswith("Error: loadvm")


def test_job_api_without_devices_takes_the_seed_rules(guest):
    """The extension snapvm-ctl uses: snapshot-save without devices and vmstate."""
    q = guest.qmp
    q.cmd("snapshot-save", job_id="j1", tag="x", exclude=["vars"])
    assert "error" not in guest.wait_job("j1")
    q.cmd("job-dismiss", id="j1")
    assert [s["tag"] for s in q.cmd("query-snapshots")] == ["x"]
    q.cmd("snapshot-save", job_id="j2", tag="y")
    assert "add it to 'exclude'" in guest.wait_job("j2")["error"]
    with pytest.raises(Exception) as e:
        q.cmd("snapshot-save", job_id="j3", tag="z", devices=["disk0"], exclude=["vars"])
    assert e.value.desc == "'devices' and 'exclude' cannot be used together"


# ---- the shell, under a pseudo-terminal ----

class Term:
    """A program on a pseudo-terminal: type into it, read what it draws."""

    def __init__(self, argv, env, cols=100):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            set_winsize(0, cols)
            os.execve(argv[0], argv, env)
        self.out = b""
        self.pos = 0  # where the last match ended

    def expect(self, pattern, timeout=15):
        """Read until `pattern` (a regex over the text after the last match)."""
        deadline = time.monotonic() + timeout
        start = self.pos
        while True:
            text = self.out[start:].decode(errors="replace")
            m = re.search(pattern, text)
            if m:
                self.pos = start + len(text[:m.end()].encode())
                return m
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.out[start:]!r}"
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"the program ended; no {pattern!r} in {self.out[start:]!r}"
                self.out += chunk

    def _drain(self):
        """What the program wrote before it exited (until EIO: no writer left)."""
        while True:
            try:
                r, _, _ = select.select([self.fd], [], [], 1)
                chunk = os.read(self.fd, 4096) if r else b""
            except OSError:
                return
            if not chunk:
                return
            self.out += chunk

    def type(self, text):
        os.write(self.fd, text.encode())

    def wait(self, timeout=10, nudge=None):
        """Wait for the exit status; `nudge` is typed again every half second
        (a key typed while libedit switches the terminal mode can be lost)."""
        deadline = time.monotonic() + timeout
        next_nudge = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if nudge and time.monotonic() > next_nudge:
                self.type(nudge)
                next_nudge += 0.5
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if r:
                    self.out += os.read(self.fd, 4096)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._drain()
                return os.WEXITSTATUS(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"the shell did not exit: {self.out[-300:]!r}")


PROMPT = r"\(snapvm\) $"


def test_shell(guest, tmp_path):
    guest.qmp.cmd("savevm", tag="snap1", exclude=["vars"])
    env = dict(os.environ, HOME=str(tmp_path), TERM="xterm")
    env.pop("SNAPVM_QMP", None)
    t = Term([CTL, "--qmp", guest.sock, "shell"], env)
    t.expect(r"Connected to unix:.*Tab completes.*\n")
    t.expect(PROMPT)
    # completion of a command name from the schema, then run it
    # (what the terminal shows of a completion is cursor moves: check effects)
    t.type("query-sta\t\r")
    t.expect(r'"status": "running"')
    t.expect(PROMPT)
    # completion of an argument name ("key=", no space after it) and a quoted value
    t.type("human-monitor-command comm\t'info status'\r")
    t.expect(r'"VM status: running\\r\\n"')
    t.expect(PROMPT)
    # HMP, with completion of its command names
    t.type("hmp info snap\t\r")
    t.expect(r"List of snapshots")
    t.expect(r"snap1 ")
    t.expect(PROMPT)
    # history: up arrow recalls the last line
    t.type("\x1b[A\r")
    t.expect(r"List of snapshots")
    t.expect(PROMPT)
    # snapvm-ctl commands, with tags completed
    t.type("snapshot-info sn\t\r")
    t.expect(r"tag:\s+snap1")
    t.expect(PROMPT)
    # enum / boolean values of an argument
    t.type("query-named-block-nodes flat=o\t\t")
    t.expect(r"flat=off\s+flat=on")
    t.type("n\r")
    t.expect(r'"node-name": "disk0"')
    t.expect(PROMPT)
    # errors do not end the shell
    t.type("job-cancel id=nope\r")
    t.expect(r"GenericError: Job 'nope' not found")
    t.expect(PROMPT)
    # events are printed before the next prompt
    guest.qmp.cmd("stop")
    t.type("cont\r")
    t.expect(r"event: \S+ \S+ STOP\r\n")
    t.expect(PROMPT)
    # Ctrl-C ends a command that waits (events), not the shell; nor at the prompt
    t.type("events\r")
    time.sleep(0.5)
    guest.qmp.cmd("stop")
    t.expect(r"\d \d\d:\d\d:\d\d\.\d{6} STOP\r\n")
    t.type("\x03")
    t.expect(PROMPT)
    t.type("\x03")
    t.expect(PROMPT)  # the fresh prompt: Ctrl-C at the prompt is handled
    t.type("\x15status\r")
    t.expect(r"VM status: paused\r\n")
    t.expect(PROMPT)
    t.type("exit\r")
    assert t.wait() == 0
    # libedit's history file (it writes a space as \\040)
    history = (tmp_path / ".snapvm-ctl_history").read_text().replace("\\040", " ")
    assert "hmp info snapshots" in history and "job-cancel id=nope" in history
    # the history is there for the next shell
    t = Term([CTL, "--qmp", guest.sock, "shell"], env)
    t.expect(PROMPT)
    t.type("\x1b[A" * 5 + "\r")  # back over exit, status, events, cont: job-cancel
    t.expect(r"GenericError: Job 'nope' not found")
    t.expect(PROMPT)
    t.type("\x04")  # Ctrl-D on an empty line ends the shell
    assert t.wait(nudge="\x15\x04") == 0  # Ctrl-U: clear what a lost race left


def test_ctrl_c_cancels_the_job(tmp_path):
    """Ctrl-C on a terminal: job-cancel, wait for the job, exit 1, nothing left."""
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "64M")], mem="1024") as g:
        assert g.guest.cmd("fill 5 700", timeout=60) == "ok"
        t = Term([CTL, "--qmp", g.sock, "snapshot-create", "big"], dict(os.environ), cols=50)
        # a 50-column terminal: a shorter bar, the numbers kept, never wrapped
        m = t.expect(r"\r\x1b\[K(saving 'big'( \[[#.]{6,23}\])? +\d+%  [\d.]+ [KMG]iB / "
                     r"[^\r]*)")
        assert len(m.group(1)) <= 49, m.group(1)
        os.kill(t.pid, signal.SIGINT)
        t.expect(r"saving 'big': cancelling\r\n")
        assert t.wait(timeout=30) == 1
        assert "snapvm-ctl: " in t.out.decode().rsplit("cancelling", 1)[1]
        assert g.qmp.cmd("query-snapshots") == [] and g.qmp.cmd("query-jobs") == []
        assert "big" not in qemu_img_snapshots(g.disks[0].path(g.tmp))


def test_install_deps_needs_no_sudo_as_root(tmp_path):
    """The README's commands start with install-deps.sh: as root it must not
    need sudo (a fresh Debian 12 has none); without root and sudo it says so."""
    script = os.path.join(ROOT, "scripts", "install-deps.sh")
    # a PATH with what the script uses and no sudo, readable by an unprivileged user
    pub = tempfile.mkdtemp(prefix="snapvm-deps-", dir="/tmp")
    os.chmod(pub, 0o755)
    bindir = pathlib.Path(pub) / "bin"
    bindir.mkdir()
    for tool in ("bash", "dpkg-query", "grep", "id", "env", "apt-get"):
        path = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True,
                              text=True).stdout.strip()
        if path:
            os.symlink(path, bindir / tool)
    env = {"PATH": str(bindir)}
    if os.getuid() == 0:
        r = subprocess.run(["bash", script], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr  # everything is installed: no apt-get, no sudo
    # with a package missing, a user without sudo gets a clear error
    text = open(script).read().replace("PACKAGES=(", "PACKAGES=(no-such-package-snapvm ", 1)
    cmd = [str(bindir / "bash"), "-s"]
    if os.getuid() == 0:
        cmd = [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, input=text)
    finally:
        shutil.rmtree(pub)
    assert r.returncode == 1, r.stderr
    assert "missing packages: no-such-package-snapvm" in r.stderr
    assert "needs root, and sudo is not installed: run this as root" in r.stderr
