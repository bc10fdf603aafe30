"""The built-in guest on real KVM: boot, ticks, the serial command prompt."""
import os
import re
import signal
import time

import pytest

from vm import DATA_START, VM, checksum_bytes, fill_word

pytestmark = pytest.mark.kvm


def test_boots_with_no_arguments_and_ticks_within_2s():
    start = time.monotonic()
    with VM([], serial=None) as vm:  # really no arguments: serial on stdio
        vm.wait_ready(timeout=2)
        vm.wait_for(r"^tick 1$", timeout=2)
        assert time.monotonic() - start < 4
        first = vm.tick()
        vm.wait_for(r"^tick \d+$", timeout=2)
        assert vm.tick() > first


def test_tick_rate_follows_append():
    with VM(["-append", "tick_ms=20"]) as vm:
        vm.wait_ready()
        t0 = vm.tick()
        time.sleep(1.0)
        t1 = vm.tick()
        # 50 ticks a second nominally, against 10 by default; a loaded
        # 2-core machine delivers fewer, so the bound only has to tell the
        # two rates apart.
        assert 18 <= t1 - t0 <= 60, (t0, t1)


def test_fill_and_sum_are_deterministic():
    with VM(["-m", "64"]) as vm:
        vm.wait_ready()
        empty = vm.sum()
        assert vm.cmd("fill 7 16") == "ok"
        a = vm.sum()
        assert a != empty
        assert vm.cmd("fill 7 16") == "ok"
        assert vm.sum() == a
        assert vm.cmd("fill 8 16") == "ok"
        assert vm.sum() != a
    with VM(["-m", "64"]) as vm:
        vm.wait_ready()
        assert vm.sum() == empty
        assert vm.cmd("fill 7 16") == "ok"
        assert vm.sum() == a


def test_sum_matches_ram_file(tmp_path):
    """-mem-path shares guest RAM with a file: check fill and sum from outside."""
    ram = tmp_path / "ram"
    with VM(["-m", "4", "-mem-path", str(ram)]) as vm:
        vm.wait_ready()
        assert vm.cmd("fill 5 2") == "ok"
        guest_sum = vm.sum()
        data = ram.read_bytes()
    assert len(data) == 4 << 20
    region = data[DATA_START:]
    assert int.from_bytes(region[:8], "little") == fill_word(5, 0)
    assert int.from_bytes(region[-8:], "little") == fill_word(5, len(region) // 8 - 1)
    assert checksum_bytes(region) == guest_sum


def test_ticks_continue_during_a_long_sum():
    """sum runs in ring 3 and the timer preempts it: ticks keep coming."""
    with VM(["-m", "1024", "-append", "tick_ms=10"]) as vm:
        vm.wait_ready()
        assert vm.cmd("fill 9 1000") == "ok"  # touch the pages first
        vm.sum()
        vm.drain()
        before = len(vm.lines)
        vm.write("sum\n")
        vm.wait_for(r"^sum [0-9a-f]{16}$")
        # A 1000 MiB checksum takes well over 20 ms (two 10 ms ticks).
        ticks = [l for l in vm.lines[before:] if re.match(r"^tick \d+$", l)]
        assert len(ticks) >= 2, vm.lines[before:]


def test_dirty_rewrites_memory_until_stopped():
    with VM(["-m", "64", "-append", "tick_ms=50"]) as vm:
        vm.wait_ready()
        s0 = vm.sum()
        assert vm.cmd("dirty 200") == "ok"
        time.sleep(0.3)
        s1 = vm.sum()
        time.sleep(0.3)
        s2 = vm.sum()
        assert len({s0, s1, s2}) == 3
        assert vm.cmd("dirty 0") == "ok"
        s3 = vm.sum()
        time.sleep(0.2)
        assert vm.sum() == s3
        vm.wait_for(r"^tick \d+$")


@pytest.mark.parametrize(
    "command, reply",
    [
        ("frobnicate", "error: unknown command frobnicate"),
        ("fill x 1", "error: bad number x"),
        ("fill 1", "error: wrong number of arguments for fill"),
        ("fill 1 100000", "error: region too small (62 MiB)"),
        ("dirty -1", "error: bad number -1"),
        ("sum now", "error: wrong number of arguments for sum"),
        ("disk read 0 0", "error: no such disk 0"),
        ("disk write 3 0 1", "error: no such disk 3"),
        ("disk erase 0 0", "error: usage: disk write D LBA SEED | disk read D LBA"),
        ("disks", "disks 0"),
        ("x" * 300, "error: line too long"),
        ("a b c d e f g", "error: too many arguments"),
    ],
)
def test_bad_commands_get_one_error_line(command, reply):
    with VM(["-m", "64"]) as vm:
        vm.wait_ready()
        assert vm.cmd(command) == reply
        # The guest is still alive and answers the next command.
        assert vm.cmd("fill 1 1") == "ok"


def test_burst_of_commands_all_answered():
    with VM(["-m", "64"]) as vm:
        vm.wait_ready()
        vm.write("".join("fill %d 1\n" % i for i in range(30)))
        replies = []
        while len(replies) < 30:
            line = vm.readline()
            if not re.match(r"^tick \d+$", line):
                replies.append(line)
        assert replies == ["ok"] * 30


def test_serial_over_unix_socket():
    with VM(["-m", "64"], serial="unix") as vm:
        vm.wait_ready()
        assert re.match(r"^tick \d+$", vm.cmd("tick"))
        assert vm.cmd("fill 3 1") == "ok"


def test_serial_unix_wait_off_client_connects_later(tmp_path):
    """wait=off: the guest runs at once; a client that connects later gets
    the output from then on, and its commands are answered."""
    import socket

    path = str(tmp_path / "s.sock")
    with VM(["-m", "64", "-serial", f"unix:{path},server=on,wait=off"], serial=None) as vm:
        time.sleep(0.3)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        f = s.makefile("rwb", buffering=0)
        f.write(b"fill 2 1\n")
        lines = []
        while not lines or lines[-1] != "ok":
            lines.append(f.readline().decode().strip())
            assert len(lines) < 100, lines
        assert all(re.match(r"^tick \d+$", l) for l in lines[:-1])
        s.close()
        assert vm.stop() == 0


def test_serial_to_file_and_null(tmp_path):
    out = tmp_path / "serial.txt"
    with VM(["-serial", f"file:{out}", "-append", "tick_ms=20"], serial=None) as vm:
        time.sleep(0.5)
        assert vm.stop() == 0
    text = out.read_text()
    assert "snapvm guest ready\n" in text and "tick 1\n" in text
    with VM(["-serial", "null"], serial=None) as vm:
        time.sleep(0.3)
        assert vm.proc.poll() is None
        assert vm.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_shut_down_cleanly(sig):
    with VM(["-m", "64"]) as vm:
        vm.wait_ready()
        assert vm.stop(sig) == 0
        assert vm.stderr() == ""


def test_smp_boots():
    with VM(["-smp", "4", "-m", "64"]) as vm:
        vm.wait_ready()
        vm.wait_for(r"^tick 2$")
        assert vm.cmd("fill 1 4") == "ok"
        assert vm.stop() == 0


def test_start_paused_runs_nothing():
    with VM(["-S", "-m", "64"]) as vm:
        with pytest.raises(AssertionError):
            vm.readline(timeout=1)
        assert vm.stop() == 0


def test_daemonize_and_pidfile(tmp_path):
    pidfile = tmp_path / "snapvm.pid"
    out = tmp_path / "serial.txt"
    from vm import run_snapvm

    r = run_snapvm(["-daemonize", "-pidfile", str(pidfile), "-serial", f"file:{out}",
                    "-name", "bg", "-display", "none", "-nographic", "-monitor", "none"])
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    try:
        deadline = time.monotonic() + 5
        while "tick 1" not in (out.read_text() if out.exists() else ""):
            assert time.monotonic() < deadline, "daemon never ticked"
            time.sleep(0.05)
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while pidfile.exists():
        assert time.monotonic() < deadline, "pidfile not removed on exit"
        time.sleep(0.05)


def test_guest_reboot_starts_over():
    """reboot writes the PC reset register: snapvm resets the whole machine."""
    with VM(["-m", "64", "-append", "tick_ms=20"]) as vm:
        vm.wait_ready()
        assert vm.cmd("fill 4 1") == "ok"
        vm.wait_for(r"^tick 5$")
        assert vm.cmd("reboot") == "ok"
        vm.wait_ready()
        assert vm.readline() == "tick 1"
        assert vm.cmd("fill 4 1") == "ok"
        assert vm.stop() == 0
