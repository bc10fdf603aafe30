#!/usr/bin/python3
"""The VM half of scripts/linux-stock.sh: boot a stock Debian kernel with a
busybox initramfs to a shell on COM1, check it, snapshot it, and check the
snapshot in a fresh snapvm.  FOR HOSTS WITH VT-x/AMD-V ONLY: on this
project's PVM host Linux userspace cannot run (see linux-stock.sh), so this
has not been run by the project.

The shell is driven through snapvm's `-serial stdio` (a pipe): each command
is followed by an `echo` of a unique marker, and the answer is everything up
to that marker.
"""
import argparse
import os
import queue
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "functional"))
from qmp import QMP  # noqa: E402

SNAPVM = os.path.join(ROOT, "build", "snapvm")
DISK_MIB = 64
READY = "snapvm-stock: shell ready"


class Shell:
    def __init__(self, name, args):
        self.name = name
        self.q = queue.Queue()
        self.proc = subprocess.Popen([SNAPVM] + args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        threading.Thread(target=self._pump, daemon=True).start()
        self.n = 0

    def _pump(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            print(f"[{self.name}] {line}", flush=True)
            self.q.put(line)
        self.q.put(None)

    def wait_for(self, text, timeout):
        end = time.monotonic() + timeout
        seen = []
        while time.monotonic() < end:
            try:
                line = self.q.get(timeout=end - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                break
            if text in line and not line.lstrip().startswith("echo "):
                return seen
            seen.append(line)
        raise AssertionError(f"{self.name}: no '{text}' within {timeout} s")

    def run(self, command, timeout=30):
        self.n += 1
        marker = f"snapvm-done-{self.n}"
        self.proc.stdin.write(f"{command}; echo {marker}\n".encode())
        self.proc.stdin.flush()
        out = self.wait_for(marker, timeout)
        # Drop the shell's echo of the command line itself.
        return [ln for ln in out if command not in ln]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--workdir", required=True)
    opts = ap.parse_args()
    disk = os.path.join(opts.workdir, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, f"{DISK_MIB}M"], check=True)
    qmp_path = os.path.join(opts.workdir, "qmp.sock")
    args = ["-m", "512", "-smp", "2", "-kernel", opts.kernel, "-initrd", opts.initrd,
            "-append", "console=ttyS0 panic=-1",
            "-blockdev", f"driver=file,filename={disk},node-name=file0",
            "-blockdev", "driver=qcow2,file=file0,node-name=disk0",
            "-device", "virtio-blk-pci,drive=disk0",
            "-serial", "stdio", "-qmp", f"unix:{qmp_path},server=on,wait=off"]

    sh = Shell("boot", args)
    try:
        t0 = time.monotonic()
        sh.wait_for(READY, 120)
        print(f"linux-stock: shell after {time.monotonic() - t0:.1f} s", flush=True)
        assert sh.run("grep -c ^processor /proc/cpuinfo")[-1].strip() == "2"
        assert sh.run("cat /sys/block/vda/size")[-1].strip() == str(DISK_MIB * 2048)
        sh.run("echo before-save | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync")
        with QMP(f"unix:{qmp_path}", timeout=120) as q:
            q.cmd("savevm", tag="shell")
            q.cmd("quit")
        sh.proc.wait(60)
    finally:
        sh.stop()

    sh = Shell("restored", args + ["-loadvm", "shell"])
    try:
        assert sh.run("echo restored-ok")[-1].strip() == "restored-ok"
        assert sh.run("dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 11")[-1].startswith(
            "before-save")
        assert sh.run("grep -c ^processor /proc/cpuinfo")[-1].strip() == "2"
    finally:
        sh.stop()
    print("linux-stock: PASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
