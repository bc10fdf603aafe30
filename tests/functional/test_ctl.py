"""snapvm-ctl, the command-line QMP client, against a running snapvm."""
import json
import os
import socket
import subprocess

import pytest

from qmp import ROOT, SnapVM

pytestmark = pytest.mark.kvm
CTL = os.path.join(ROOT, "build", "snapvm-ctl")


@pytest.fixture(scope="module")
def vm():
    with SnapVM(extra_args=["-S"]) as vm:
        yield vm


def ctl(*args):
    return subprocess.run([CTL, *args], capture_output=True, text=True, timeout=20)


def test_prints_return_as_json(vm):
    r = ctl("-s", f"unix:{vm.sock}", "query-status")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"running": False, "singlestep": False, "status": "prelaunch"}
    r = ctl("-c", "-s", f"unix:{vm.sock}", "query-jobs")
    assert r.stdout == "[]\n"


def test_key_value_arguments_are_typed_by_the_schema(vm):
    r = ctl("-s", f"unix:{vm.sock}", "human-monitor-command", "command-line=info status")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "VM status: paused (prelaunch)\r\n"
    # "on" becomes true where the schema wants a boolean
    r = ctl("-s", f"unix:{vm.sock}", "query-named-block-nodes", "flat=on")
    assert r.returncode == 0, r.stderr
    # a string argument stays a string even if it looks like a number
    r = ctl("-s", f"unix:{vm.sock}", "job-cancel", "id=123")
    assert r.returncode == 1
    assert r.stderr == "GenericError: Job '123' not found\n"


def test_json_arguments(vm):
    r = ctl("-s", f"unix:{vm.sock}", "human-monitor-command",
            '{"command-line": "info status", "cpu-index": 0}')
    assert r.returncode == 0, r.stderr
    assert "prelaunch" in json.loads(r.stdout)


def test_errors_exit_1_with_class_and_desc(vm):
    r = ctl("-s", f"unix:{vm.sock}", "no-such-command")
    assert r.returncode == 1
    assert r.stderr == "CommandNotFound: The command no-such-command has not been found\n"
    assert r.stdout == ""
    r = ctl("-s", f"unix:{vm.sock}", "job-cancel")
    assert r.returncode == 1
    assert r.stderr == "GenericError: Parameter 'id' is missing\n"


def test_usage_and_connection_errors(tmp_path):
    r = ctl("query-status")
    assert r.returncode == 2 and "usage" in r.stderr
    r = ctl("-s", f"unix:{tmp_path}/none.sock", "query-status")
    assert r.returncode == 2 and "cannot connect" in r.stderr
    r = ctl("-s", "pipe:x", "query-status")
    assert r.returncode == 2


def test_tcp(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with SnapVM(extra_args=["-S"], qmp_specs=[f"tcp:127.0.0.1:{port},server=on,wait=off"]):
        r = ctl("-s", f"tcp:127.0.0.1:{port}", "query-version")
        assert r.returncode == 0, r.stderr
        assert "qemu" in json.loads(r.stdout)
