"""The machine's run states, driven over QMP, observed on the guest's serial
line: stop really stops the guest, cont resumes it where it was, resets
reboot it, quit shuts down cleanly, and the events say so."""
import os
import re
import time

import pytest

from qmp import QMP
from vm import VM, VMError

pytestmark = pytest.mark.kvm


def start(tmp_path, *args):
    sock = os.path.join(str(tmp_path), "qmp.sock")
    vm = VM(["-m", "64", "-append", "tick_ms=20", "-qmp", f"unix:{sock},server=on,wait=off"]
            + list(args), tmpdir=tmp_path)
    vm.start()
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return vm, QMP(sock)


def test_stop_and_cont(tmp_path):
    vm, qmp = start(tmp_path)
    try:
        vm.wait_ready()
        vm.wait_for(r"^tick 3$")
        qmp.cmd("stop")
        qmp.event("STOP")
        assert qmp.cmd("query-status") == {"running": False, "singlestep": False,
                                           "status": "paused"}
        vm.drain()
        last = [int(m.group(1)) for m in map(re.compile(r"^tick (\d+)$").match, vm.lines) if m][-1]
        with pytest.raises(VMError):
            vm.readline(timeout=0.5)  # nothing happens while stopped
        qmp.cmd("stop")  # stopping a stopped VM succeeds, as in QEMU
        qmp.cmd("cont")
        qmp.event("RESUME")
        assert vm.wait_for(r"^tick (\d+)$").group(1) == str(last + 1)
        assert qmp.cmd("query-status")["status"] == "running"
    finally:
        qmp.close()
        vm.kill()


def test_no_burst_of_missed_ticks_after_cont(tmp_path):
    """Guest time stands still while stopped: no catch-up burst on cont."""
    vm, qmp = start(tmp_path)
    try:
        vm.wait_ready()
        vm.wait_for(r"^tick 3$")
        qmp.cmd("stop")
        time.sleep(1.0)  # 50 ticks' worth of PIT periods at 20 ms
        vm.drain()
        before = len(vm.lines)
        qmp.cmd("cont")
        time.sleep(0.3)
        vm.drain()
        ticks = [l for l in vm.lines[before:] if re.match(r"^tick \d+$", l)]
        assert 5 <= len(ticks) <= 25, ticks  # about 15, not 65
    finally:
        qmp.close()
        vm.kill()


def test_start_paused_then_cont(tmp_path):
    vm, qmp = start(tmp_path, "-S")
    try:
        assert qmp.cmd("query-status") == {"running": False, "singlestep": False,
                                           "status": "prelaunch"}
        with pytest.raises(VMError):
            vm.readline(timeout=0.5)
        qmp.cmd("cont")
        vm.wait_ready()
        assert vm.readline() == "tick 1"
    finally:
        qmp.close()
        vm.kill()


def test_system_reset_and_guest_reboot(tmp_path):
    vm, qmp = start(tmp_path)
    try:
        vm.wait_ready()
        vm.wait_for(r"^tick 3$")
        qmp.cmd("system_reset")
        qmp.event("RESET", match={"guest": False})
        vm.wait_ready()
        assert vm.readline() == "tick 1"
        assert vm.cmd("reboot") == "ok"
        qmp.event("RESET", match={"guest": True, "reason": "guest-reset"})
        vm.wait_ready()
        assert vm.readline() == "tick 1"
        assert vm.cmd("fill 1 1") == "ok"
    finally:
        qmp.close()
        vm.kill()


def test_quit(tmp_path):
    vm, qmp = start(tmp_path)
    try:
        vm.wait_ready()
        qmp.cmd("quit")
        ev = qmp.event("SHUTDOWN")
        assert ev["data"] == {"guest": False, "reason": "host-qmp-quit"}
        assert vm.proc.wait(timeout=10) == 0
    finally:
        qmp.close()
        vm.kill()
