#!/usr/bin/python3
"""Boot the Linux test kernel on snapvm, snapshot it mid-boot, and boot the
snapshot in a fresh process (scripts/linux-smoke.sh runs this).

Boot 1: -smp 2, a qcow2 disk on virtio-blk-pci, COM1 on stdio, a QMP socket.
When Linux reports its CPUs up ("smp: Brought up"), `savevm midboot` over
QMP saves the whole VM into the qcow2 image while the kernel is still
booting; the kernel then carries on.  Boot 1 passes when Linux reached
"Run /init as init process", its virtio-blk driver bound the disk with the
right size, its 8250 driver found ttyS0, and 2 CPUs came up.

Boot 2: a fresh snapvm with the same command line and `-loadvm midboot`.
It must carry on from the saved point (no "Linux version" banner again,
since it does not start over) and reach "Run /init as init process" again,
with the disk and the serial port found after the restore.

Every guest line is printed, prefixed by the boot it came from.  On this
PVM host Linux's /init then dies on its first system call (a guest syscall
never reaches CPL0 here); that is expected and after the last check.
Exit status 0 only if every check passed.
"""
import argparse
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "functional"))
from qmp import QMP  # noqa: E402  (the tests' QMP client)

SNAPVM = os.path.join(ROOT, "build", "snapvm")
DISK_MIB = 64
# The PVM host's CPL0 emulator lacks xrstor(s), clac, popcnt and more: keep
# Linux off them (see docs/machine.md).  mwaitx: Linux's udelay() sleeps in
# MWAITX on AMD and never wakes here (the AP bring-up hung in it).
HOST_WORKAROUNDS = ("noxsave nopcid clearcpuid=smap,popcnt,rdrand,rdseed,fsgsbase,serialize,"
                    "invpcid,rdpid,movbe,clflushopt,clwb,avx,avx2,avx512f,bmi1,bmi2,erms,fsrm,mwaitx")
# rodata=off: making the kernel's rodata read-only splits and rewrites its
# page tables, 25 s of emulated CPL0 code here; nothing in this test needs it.
CMDLINE = "console=ttyS0 earlyprintk=ttyS0 printk.time=1 rodata=off " + HOST_WORKAROUNDS

RUN_INIT = "Run /init as init process"
SMP_UP = re.compile(r"smp: Brought up \d+ nodes?, (\d+) CPUs?")
VDA = re.compile(r"virtio_blk virtio\d+: \[vda\] (\d+) 512-byte logical blocks")
TTYS0 = re.compile(r"ttyS0 at I/O 0x3f8")
BANNER = "Linux version "
STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]")


class Boot:
    """One snapvm process: its serial lines arrive on a queue as they come."""

    def __init__(self, name, args, log):
        self.name = name
        self.lines = []
        self.log = log
        self.q = queue.Queue()
        self.start = time.monotonic()
        self.proc = subprocess.Popen([SNAPVM] + args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        threading.Thread(target=self._pump, args=(self.proc.stdout, ""), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, "snapvm: "),
                         daemon=True).start()

    def _pump(self, stream, prefix):
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.log(f"[{self.name} {time.monotonic() - self.start:6.1f}s] {prefix}{line}")
            if not prefix:
                self.q.put(line)
        if not prefix:
            self.q.put(None)

    def wait_for(self, pattern, deadline):
        """Read guest lines until one matches `pattern` (str or regex);
        returns the match (True for a str), or None at EOF or the deadline."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if isinstance(pattern, str):
                if pattern in line:
                    return True
            else:
                m = pattern.search(line)
                if m:
                    return m

    def drain(self, seconds):
        end = time.monotonic() + seconds
        while self.wait_for("\0never\0", end) is not None:
            pass

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def guest_time(line):
    m = STAMP.match(line)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds each boot may take to reach /init (default 900)")
    ap.add_argument("--smp", type=int, default=2)
    opts = ap.parse_args()

    failures = []

    def check(ok, what):
        print(f"linux-smoke: {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            failures.append(what)

    def log(line):
        print(line, flush=True)

    tmp = tempfile.mkdtemp(prefix="snapvm-linux-smoke-")
    disk = os.path.join(tmp, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, f"{DISK_MIB}M"], check=True)
    qmp_path = os.path.join(tmp, "qmp.sock")
    args = ["-m", "256", "-smp", str(opts.smp), "-kernel", opts.kernel, "-initrd", opts.initrd,
            "-append", CMDLINE,
            "-blockdev", f"driver=file,filename={disk},node-name=file0",
            "-blockdev", "driver=qcow2,file=file0,node-name=disk0",
            "-device", "virtio-blk-pci,drive=disk0",
            "-serial", "stdio", "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    want_blocks = DISK_MIB * 2048

    # ---- boot 1: from scratch, saved mid-boot ----
    b1 = Boot("boot1", args, log)
    t0 = time.monotonic()
    deadline = t0 + opts.timeout
    try:
        m = b1.wait_for(SMP_UP, deadline)
        check(m is not None and int(m.group(1)) == opts.smp,
              f"boot 1: {opts.smp} CPUs came up" + (f" (Linux says {m.group(1)})" if m else ""))
        saved = False
        if m is not None:
            t_save = time.monotonic()
            with QMP(f"unix:{qmp_path}", timeout=300) as q:
                info = q.cmd("savevm", tag="midboot")
            saved = True
            print(f"linux-smoke: savevm midboot took {time.monotonic() - t_save:.1f} s: {info}",
                  flush=True)
        check(saved, "boot 1: savevm midboot while Linux boots")
        if b1.wait_for(RUN_INIT, deadline):
            print(f"linux-smoke: boot 1 reached /init after {time.monotonic() - t0:.0f} s "
                  f"host time, {guest_time(b1.lines[-1])} s guest time", flush=True)
            reached = True
        else:
            reached = False
        check(reached, f"boot 1: '{RUN_INIT}'")
        b1.drain(2)
    finally:
        b1.stop()
    text1 = "\n".join(b1.lines)
    vda = VDA.search(text1)
    check(vda is not None and int(vda.group(1)) == want_blocks,
          f"boot 1: virtio_blk bound vda with {want_blocks} sectors"
          + (f" (Linux says {vda.group(1)})" if vda else ""))
    check(TTYS0.search(text1) is not None, "boot 1: the 8250 driver found ttyS0")

    # ---- boot 2: a fresh process from the snapshot ----
    if saved:
        b2 = Boot("boot2", args + ["-loadvm", "midboot"], log)
        t0 = time.monotonic()
        try:
            ok = b2.wait_for(RUN_INIT, t0 + opts.timeout)
            check(bool(ok), f"boot 2 (-loadvm midboot): '{RUN_INIT}' again")
            if ok:
                print(f"linux-smoke: boot 2 reached /init {time.monotonic() - t0:.0f} s after "
                      f"the load, at {guest_time(b2.lines[-1])} s guest time", flush=True)
            b2.drain(2)
        finally:
            b2.stop()
        text2 = "\n".join(b2.lines)
        check(BANNER not in text2, "boot 2 carried on from the snapshot (no new Linux banner)")
        vda2 = VDA.search(text2)
        if VDA.search(text1[:text1.find("smp: Brought up")]) is None:
            # The disk was probed after the save point: it must be probed again.
            check(vda2 is not None and int(vda2.group(1)) == want_blocks,
                  "boot 2: virtio_blk bound vda after the restore")
    if failures:
        # Keep the image (it holds the snapshot) for a post-mortem:
        # build/snapvm <the same options> -loadvm midboot boots it again.
        print(f"linux-smoke: kept {disk} (snapshot 'midboot') for a post-mortem", flush=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"linux-smoke: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}",
          flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
