"""QMP protocol conformance of snapvm's monitor, through tests/functional/qmp.py.

Each test runs the real build/snapvm (paused at start with -S, so that the
guest costs nothing) and talks to it over real sockets.
"""
import json
import os
import socket
import stat
import threading
import time

import pytest

from qmp import QMP, QMPError, SnapVM

pytestmark = pytest.mark.kvm


@pytest.fixture
def vm():
    with SnapVM(extra_args=["-S"]) as vm:
        yield vm


def test_greeting_and_crlf(vm):
    q = vm.connect(negotiate=False)
    ver = q.greeting["QMP"]["version"]
    assert set(ver["qemu"]) == {"major", "minor", "micro"}
    assert all(isinstance(v, int) for v in ver["qemu"].values())
    assert isinstance(ver["package"], str)
    assert q.greeting["QMP"]["capabilities"] == []
    assert q.lines[0].endswith(b"}\r\n")
    q.cmd("qmp_capabilities")
    assert q.cmd("query-version") == ver


def test_only_qmp_capabilities_before_negotiation(vm):
    q = vm.connect(negotiate=False)
    for name in ("query-status", "quit", "no-such-command"):
        with pytest.raises(QMPError) as e:
            q.cmd(name)
        assert e.value.cls == "CommandNotFound"
        assert e.value.desc == "Expecting capabilities negotiation with 'qmp_capabilities'"
    assert q.cmd("qmp_capabilities") == {}
    with pytest.raises(QMPError) as e:
        q.cmd("qmp_capabilities")
    assert e.value.cls == "CommandNotFound"
    assert q.cmd("query-status")["status"] == "prelaunch"


def test_oob_is_not_offered(vm):
    q = vm.connect(negotiate=False)
    with pytest.raises(QMPError) as e:
        q.cmd("qmp_capabilities", enable=["oob"])
    assert "oob" in e.value.desc
    with pytest.raises(QMPError) as e:
        q.cmd("qmp_capabilities", enable=["bogus"])
    assert e.value.desc == "Parameter 'enable[0]' does not accept value 'bogus'"
    q.cmd("qmp_capabilities")


@pytest.mark.parametrize("id", [0, -7, 3.25, 2**53, "x", "", None, True, False, [],
                                [1, "a", {"b": None}], {}, {"k": [1, 2, {"z": "q"}]}])
def test_id_echoed_verbatim(vm, id):
    reply = vm.qmp.execute("query-status", id=id)
    assert "return" in reply and reply["id"] == id and type(reply["id"]) is type(id)
    reply = vm.qmp.execute("no-such-command", id=id)
    assert reply["error"]["class"] == "CommandNotFound" and reply["id"] == id


def test_no_id_no_id_in_reply(vm):
    vm.qmp.send({"execute": "query-status"})
    reply = vm.qmp.recv()
    assert "id" not in reply and reply["return"]["status"] == "prelaunch"


def test_single_quoted_strings(vm):
    """The spec's extension: 'single-quoted' strings and the \\' escape."""
    q = vm.qmp
    q.send_raw(b"{'execute': 'human-monitor-command', 'arguments': "
               b"{'command-line': 'info status'}, 'id': 'it\\'s \"q\"'}")
    assert q.recv() == {"return": "VM status: paused (prelaunch)\r\n", "id": "it's \"q\""}
    q.send_raw(b'{"execute": "query-status", "id": "\\\'"}')
    assert q.recv()["id"] == "'"


def test_pipelined_commands_answer_in_order(vm):
    q = vm.qmp
    names = ["query-status", "query-version", "query-jobs", "bogus", "query-commands"] * 8
    q.send_raw(b"".join(json.dumps({"execute": n, "id": i}).encode() for i, n in enumerate(names)))
    for i, name in enumerate(names):
        reply = q.recv()
        assert reply["id"] == i
        assert ("error" in reply) == (name == "bogus")


def test_message_split_over_many_writes(vm):
    q = vm.qmp
    msg = json.dumps({"execute": "human-monitor-command",
                      "arguments": {"command-line": "info status"}, "id": "split"}).encode()
    for i in range(0, len(msg), 7):
        q.send_raw(msg[i:i + 7])
        time.sleep(0.002)
    reply = q.recv()
    assert reply == {"return": "VM status: paused (prelaunch)\r\n", "id": "split"}
    # Two messages whose boundary falls inside one write.
    a = json.dumps({"execute": "query-status", "id": 1}).encode()
    b = json.dumps({"execute": "query-jobs", "id": 2}).encode()
    both = a + b"\r\n" + b
    q.send_raw(both[:len(a) + 5])
    time.sleep(0.05)
    q.send_raw(both[len(a) + 5:])
    assert q.recv()["id"] == 1
    assert q.recv() == {"return": [], "id": 2}


def test_events_go_to_every_negotiated_client(vm):
    others = [vm.connect() for _ in range(3)]
    raw = vm.connect(negotiate=False)
    vm.qmp.cmd("cont")
    for q in [vm.qmp] + others:
        ev = q.event("RESUME", timeout=5)
        ts = ev["timestamp"]
        assert set(ts) == {"seconds", "microseconds"}
        assert abs(ts["seconds"] - time.time()) < 60 and 0 <= ts["microseconds"] < 10**6
    assert vm.qmp.cmd("query-status") == {"running": True, "singlestep": False,
                                          "status": "running"}
    vm.qmp.cmd("stop")
    for q in [vm.qmp] + others:
        q.event("STOP", timeout=5)
    assert vm.qmp.cmd("query-status")["status"] == "paused"
    vm.qmp.cmd("system_reset")
    vm.qmp.event("RESET", timeout=5)
    with pytest.raises(TimeoutError):  # not negotiated: no events at all
        raw._read_message(timeout=0.3)


def test_many_clients_at_once(vm):
    errors = []

    def client(n):
        try:
            with vm.connect() as q:
                for _ in range(5):
                    assert q.cmd("query-status")["status"] == "prelaunch"
                assert q.cmd("query-version")
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_client_vanishing_mid_command(vm):
    for _ in range(10):
        q = vm.connect()
        # a deferred command, a pipelined one behind it, then a partial message
        q.send_raw(b'{"execute": "query-named-block-nodes"}{"execute": "query-status"}{"exe')
        q.close()
    half = vm.connect()
    half.sock.shutdown(socket.SHUT_WR)  # sends nothing more, still reads
    assert vm.qmp.cmd("query-status")["status"] == "prelaunch"
    assert len(vm.connect().cmd("query-commands")) > 10


def test_half_closed_client_gets_its_answers(vm):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(vm.sock)
    s.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "query-status", "id": 5}\n')
    s.shutdown(socket.SHUT_WR)
    data = b""
    s.settimeout(5)
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    lines = data.split(b"\r\n")
    assert json.loads(lines[2])["id"] == 5  # greeting, capabilities, query-status


def test_socket_is_private(vm):
    assert stat.S_IMODE(os.stat(vm.sock).st_mode) == 0o600


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_several_listeners_unix_and_tcp(tmp_path):
    port = _free_port()
    second = tmp_path / "second.sock"
    with SnapVM(extra_args=["-S"], qmp_specs=[f"tcp:127.0.0.1:{port},server=on,wait=off",
                                                f"unix:{second},server,nowait"]) as vm:
        with QMP(f"tcp:127.0.0.1:{port}") as t, QMP(f"unix:{second}") as u:
            assert t.cmd("query-status")["status"] == "prelaunch"
            assert u.cmd("query-status")["status"] == "prelaunch"
            vm.qmp.cmd("cont")
            t.event("RESUME", timeout=5)
            u.event("RESUME", timeout=5)
    assert not second.exists()


def test_bad_qmp_spec_is_refused(tmp_path):
    import subprocess
    from qmp import SNAPVM
    for spec, words in [(f"unix:{tmp_path}/a.sock,server=on,wait=on", "wait=on"),
                        ("tcp:127.0.0.1:notaport,server=on,wait=off", "tcp"),
                        ("pipe:foo", "unix:PATH")]:
        r = subprocess.run([SNAPVM, "-S", "-qmp", spec], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode != 0
        assert words in r.stderr


def test_introspection_covers_every_command(vm):
    q = vm.qmp
    commands = {c["name"] for c in q.cmd("query-commands")}
    for name in ("qmp_capabilities", "query-version", "query-commands", "query-qmp-schema",
                 "query-status", "stop", "cont", "system_reset", "quit",
                 "query-named-block-nodes", "human-monitor-command", "query-jobs",
                 "job-cancel", "job-dismiss", "job-finalize"):
        assert name in commands
    schema = q.cmd("query-qmp-schema")
    by_name = {e["name"]: e for e in schema}
    assert len(by_name) == len(schema)
    for name in commands:
        entry = by_name[name]
        assert entry["meta-type"] == "command"
        assert by_name[entry["arg-type"]]["meta-type"] == "object"
        assert entry["ret-type"] in by_name
    for ev in ("STOP", "RESUME", "SHUTDOWN", "RESET", "JOB_STATUS_CHANGE"):
        assert by_name[ev]["meta-type"] == "event"
    args = by_name[by_name["human-monitor-command"]["arg-type"]]["members"]
    assert {"name": "command-line", "type": "str"} in args
    status = by_name[by_name["query-status"]["ret-type"]]
    run_state = next(m for m in status["members"] if m["name"] == "status")
    assert "save-vm" in by_name[run_state["type"]]["values"]


def test_hmp(vm):
    assert vm.qmp.hmp("info status") == "VM status: paused (prelaunch)\r\n"
    vm.qmp.cmd("cont")
    assert vm.qmp.hmp("  info   status ") == "VM status: running\r\n"
    assert vm.qmp.hmp("info bogus") == "unknown command: 'info bogus'\r\n"
    assert vm.qmp.hmp("frob x y") == "unknown command: 'frob'\r\n"
    assert "info status" in vm.qmp.hmp("help")


def test_query_named_block_nodes_without_disks(vm):
    assert vm.qmp.cmd("query-named-block-nodes") == []
    assert vm.qmp.cmd("query-named-block-nodes", flat=True) == []


def test_quit_answers_then_shuts_down(vm):
    other = vm.connect()
    assert vm.qmp.cmd("quit") == {}
    ev = other.event("SHUTDOWN", timeout=5)
    assert ev["data"]["reason"] == "host-qmp-quit"
    assert vm.proc.wait(timeout=10) == 0

