"""The machine's run states, driven over QMP, observed on the guest's serial
line: stop really stops the guest, cont resumes it where it was, resets
reboot it, quit shuts down cleanly, and the events say so."""
import os
import time

import pytest

from qmp import QMP
from vm import TICK_RE, VM

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


TICK = 0.020  # tick_ms=20


def ticks(vm, since=0):
    """The tick numbers in the serial lines received so far, from line `since` on."""
    return [int(m.group(1)) for m in map(TICK_RE.match, vm.lines[since:]) if m]


def sync(vm):
    """Read everything the guest printed up to now: once the reply to a
    command sent now has arrived, every line printed before it has too (the
    serial line keeps order).  Returns a tick count at least the guest's
    count at the moment of the call."""
    assert vm.cmd("help").startswith("commands:")
    return ticks(vm)[-1]


def test_stop_and_cont(tmp_path):
    """States and events of stop/cont, and the guest resumes where it was:
    its tick count carries on by one, never restarts."""
    vm, qmp = start(tmp_path)
    try:
        vm.wait_ready()
        vm.wait_for(r"^tick 3$")
        qmp.cmd("stop")
        qmp.event("STOP")
        assert qmp.cmd("query-status") == {"running": False, "singlestep": False,
                                           "status": "paused"}
        qmp.cmd("stop")  # stopping a stopped VM succeeds, as in QEMU
        assert qmp.cmd("query-status")["status"] == "paused"
        assert not [e for e in qmp.events if e["event"] == "STOP"]  # no second STOP
        qmp.cmd("cont")
        qmp.event("RESUME")
        assert qmp.cmd("query-status") == {"running": True, "singlestep": False,
                                           "status": "running"}
        before = len(vm.lines)
        last = sync(vm)
        vm.wait_for(rf"^tick {last + 3}$")
        seen = ticks(vm)
        assert seen == list(range(seen[0], seen[-1] + 1)), seen  # one by one, across the stop
        assert seen[0] == 1 and ticks(vm, before)[-1] == last + 3
    finally:
        qmp.close()
        vm.kill()


def test_guest_time_stands_still_while_stopped(tmp_path):
    """While stopped the guest runs nothing, and on cont its timer does not
    catch up with a burst of the ticks it missed.  Checked with a lower bound
    on host time only, which a loaded host can only make longer: the guest
    must run K more tick periods after the stop, so reaching tick upper+K
    takes at least STOPPED + (K - 1) periods.  A guest that kept running, or
    whose timer delivered the ~50 missed ticks at once, gets there in about
    STOPPED seconds (or much less)."""
    STOPPED, K = 1.0, 25
    vm, qmp = start(tmp_path)
    try:
        vm.wait_ready()
        vm.wait_for(r"^tick 3$")
        t0 = time.monotonic()
        upper = sync(vm)  # >= the guest's tick count at t0
        qmp.cmd("stop")
        qmp.event("STOP")
        time.sleep(STOPPED)  # host time that must not become guest time
        qmp.cmd("cont")
        qmp.event("RESUME")
        vm.wait_for(rf"^tick {upper + K}$", timeout=30)
        elapsed = time.monotonic() - t0
        assert elapsed >= STOPPED + (K - 1) * TICK, elapsed
    finally:
        qmp.close()
        vm.kill()


def test_start_paused_then_cont(tmp_path):
    """-S: nothing of the guest runs before cont; then it boots from scratch."""
    vm, qmp = start(tmp_path, "-S")
    try:
        assert qmp.cmd("query-status") == {"running": False, "singlestep": False,
                                           "status": "prelaunch"}
        vm.drain()
        assert vm.lines == []  # not a line: the guest has not run an instruction
        qmp.cmd("cont")
        qmp.event("RESUME")
        vm.wait_ready()
        assert len(vm.lines) == 1  # the banner is the first thing it ever printed
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
