"""A built-in guest with disks and a QMP socket, for the whole-VM snapshot tests.

    g = Guest(tmp_path, disks=[Disk("disk0", "qcow2", "64M")]).start()
    g.guest.cmd("fill 1 8")           # the serial console (vm.VM)
    g.qmp.cmd("savevm", tag="a")      # QMP (qmp.QMP)
    g.stop()

Disk images are created with qemu-img (the users' tool and our oracle) the
first time and reused afterwards, so a second Guest on the same tmp_path sees
the same images: that is how tests restart snapvm on a saved image.
"""
import json
import os
import re
import subprocess
import time

from qmp import QMP
from vm import TICK_RE, VM


class Disk:
    def __init__(self, name, fmt="qcow2", size="64M", attach=True, read_only=False):
        self.name = name
        self.fmt = fmt
        self.size = size
        self.attach = attach
        self.read_only = read_only

    def path(self, tmp):
        return os.path.join(str(tmp), f"{self.name}.{self.fmt}")

    def create(self, tmp):
        if not os.path.exists(self.path(tmp)):
            subprocess.run(["qemu-img", "create", "-q", "-f", self.fmt, self.path(tmp), self.size],
                           check=True)

    def args(self, tmp):
        opts = (f"driver={self.fmt},node-name={self.name},file.driver=file,"
                f"file.filename={self.path(tmp)}")
        if self.read_only:
            opts += ",read-only=on"
        args = ["-blockdev", opts]
        if self.attach:
            args += ["-device", f"virtio-blk-pci,drive={self.name}"]
        return args


class Guest:
    def __init__(self, tmp, disks=(), mem="64", extra=(), name="vm", wait_ready=True, env=None):
        self.tmp = str(tmp)
        self.wait_ready = wait_ready
        self.disks = list(disks)
        self.sock = os.path.join(self.tmp, f"{name}-qmp.sock")
        args = ["-m", str(mem), "-qmp", f"unix:{self.sock},server=on,wait=off"]
        for d in self.disks:
            d.create(self.tmp)
            args += d.args(self.tmp)
        self.args = args + list(extra)
        self.guest = VM(self.args, tmpdir=self.tmp, env=env)
        self.qmp = None

    def start(self):
        self.guest.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.qmp = QMP(self.sock)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if self.guest.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"snapvm did not start: {self.guest.stderr()}")
                time.sleep(0.02)
        if self.wait_ready:
            self.guest.wait_ready()
        return self

    def connect(self):
        return QMP(self.sock)

    def stop(self):
        if self.qmp:
            try:
                self.qmp.cmd("quit")
            except Exception:
                pass
            self.qmp.close()
        self.guest.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- guest state ----

    def paused_tick(self):
        """Stop the VM (after its next tick) and return its tick count: the
        last tick it printed, or the one it was printing when the stop cut
        its line (the count goes up before the line goes out).  Exact, not
        timed: once stop has answered, all the guest printed has been sent
        (settle() reads it all), and nothing more comes."""
        self.next_tick()
        self.qmp.cmd("stop")
        partial = self.guest.settle()
        ticks = [int(m.group(1)) for m in map(TICK_RE.match, self.guest.lines) if m]
        assert ticks, "the guest printed no tick"
        if partial:
            # Only a tick line can be unfinished here: every command's reply has come.
            cut = partial.rstrip("\r")
            assert f"tick {ticks[-1] + 1}".startswith(cut), f"the stop cut a line {partial!r}"
            return ticks[-1] + 1
        return ticks[-1]

    def stop_for_load(self):
        """Stop the VM and read all it printed, ending a line the stop cut:
        what a snapshot loaded next prints starts a line of its own, so
        next_tick() after the load reads the loaded guest's tick, never this
        guest's (in flight, or glued to the loaded guest's output)."""
        self.qmp.cmd("stop")
        self.guest.settle(cut=True)

    def next_tick(self, timeout=5):
        """The next `tick N` line the guest prints."""
        return int(self.guest.wait_for(r"^tick (\d+)$", timeout=timeout).group(1))

    def resync(self):
        """After a load, the guest replays the serial output that followed
        the snapshot (a line it was half-way through, say), as any VM would.
        Wait for the next complete tick line, so that replies read
        afterwards are replies to what is sent afterwards."""
        self.guest.drain()
        self.next_tick()
        self.guest.drain()

    def sector(self, disk, lba):
        reply = self.guest.cmd(f"disk read {disk} {lba}")
        assert re.match(r"^disk [0-9a-f]{16}$", reply), reply
        return reply

    def wait_job(self, job_id, timeout=60):
        """Wait until a job concludes; return its query-jobs entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for job in self.qmp.cmd("query-jobs"):
                if job["id"] == job_id and job["status"] == "concluded":
                    return job
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} did not conclude")


def qemu_img_check(path):
    """qemu-img check, parsed: (errors, leaks)."""
    r = subprocess.run(["qemu-img", "check", "--output=json", path], capture_output=True,
                       text=True)
    assert r.returncode in (0, 3), r.stderr  # 3: leaks only
    info = json.loads(r.stdout)
    return info.get("corruptions", 0) + info.get("check-errors", 0), info.get("leaks", 0)


def qemu_img_snapshots(path):
    r = subprocess.run(["qemu-img", "info", "--output=json", "-U", path], capture_output=True,
                       text=True, check=True)
    return {s["name"]: s for s in json.loads(r.stdout).get("snapshots", [])}
