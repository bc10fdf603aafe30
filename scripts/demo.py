#!/usr/bin/env python3
"""The demo: boot the built-in guest, show it working, snapshot it while it
runs, change it, restore the snapshot, and show that everything came back.

Uses the same drivers as the functional tests (tests/functional/vm.py for
the serial console, tests/functional/qmp.py for QMP) on real KVM, a real
qcow2 image, and qemu-img as the independent judge of the image.
"""
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "functional"))

from qmp import QMP  # noqa: E402
from vm import VM, checksum_bytes, sector_bytes  # noqa: E402


def say(msg):
    print(f"demo: {msg}", flush=True)


def main():
    with tempfile.TemporaryDirectory(prefix="snapvm-demo-") as work:
        return demo(work)


def demo(work):
    img = os.path.join(work, "disk.qcow2")
    sock = os.path.join(work, "qmp.sock")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "64M"], check=True)
    args = ["-m", "256", "-append", "tick_ms=200",
            "-blockdev", f"driver=qcow2,node-name=disk0,file.driver=file,file.filename={img}",
            "-device", "virtio-blk-pci,drive=disk0",
            "-qmp", f"unix:{sock},server=on,wait=off"]
    say("starting: build/snapvm " + " ".join(args))
    t0 = time.monotonic()
    with VM(args) as vm:
        vm.wait_ready()
        vm.wait_for(r"^tick 2$")
        say(f"guest up, ticking ({time.monotonic() - t0:.2f}s): {vm.lines[-3:]}")
        say(f"guest sees {vm.cmd('disks')}; RAM checksum {vm.cmd('sum')}")
        say(f"fill 42 200 (200 MiB of RAM, in ring 3) -> {vm.cmd('fill 42 200')}")
        before = vm.sum()
        say(f"sum -> {before:016x}")
        say(f"disk write 0 100 7 -> {vm.cmd('disk write 0 100 7')}")
        qmp = QMP(sock)
        say(f"QMP query-status -> {qmp.cmd('query-status')['status']}")
        tick_at_save = vm.tick()
        t = time.monotonic()
        r = qmp.cmd("savevm", tag="demo")
        say(f"savevm demo at tick {tick_at_save}: {r['vm-state-size'] >> 20} MiB of vmstate "
            f"on {r['vmstate']} in {time.monotonic() - t:.2f}s")
        say(f"now change everything: fill 43 200 -> {vm.cmd('fill 43 200')}, "
            f"disk write 0 100 8 -> {vm.cmd('disk write 0 100 8')}")
        vm.wait_for(r"^tick \d+$")
        tick_changed = vm.tick()
        say(f"sum -> {vm.sum():016x} (different), tick {tick_changed}")
        # Stop first and read everything the changed guest printed, so that
        # the first tick line read below is the restored guest's own.
        qmp.cmd("stop")
        vm.settle(cut=True)
        t = time.monotonic()
        qmp.cmd("loadvm", tag="demo")
        say(f"stop, loadvm demo in {time.monotonic() - t:.2f}s, cont")
        qmp.cmd("cont")
        after_tick = vm.wait_for(r"^tick (\d+)$").group(1)
        after = vm.sum()
        disk = vm.cmd("disk read 0 100")
        want = "disk %016x" % checksum_bytes(sector_bytes(7))
        say(f"first tick after loadvm: {after_tick} (the snapshot's instant is the end of the "
            f"live save: after tick {tick_at_save}, by tick {tick_changed}); "
            f"sum -> {after:016x}; {disk}")
        # The save is live: the guest ran on while RAM was written, so the
        # snapshot holds a tick at or after tick_at_save, before tick_changed.
        ok = after == before and disk == want and tick_at_save < int(after_tick) <= tick_changed
        qmp.close()
        assert vm.stop() == 0
    say("snapshots on the image (qemu-img snapshot -l):")
    print(subprocess.run(["qemu-img", "snapshot", "-l", img], capture_output=True,
                         text=True).stdout, end="")
    check = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    say("qemu-img check: " + check.stdout.strip().splitlines()[0])
    ok = ok and check.returncode == 0
    say("it worked: RAM, disk and the tick count came back from the snapshot" if ok
        else "FAILED: the restored guest does not match the snapshot")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
