#!/usr/bin/python3
"""Whole-VM snapshot save and load: snapvm against QEMU 7.2, side by side.

Both VMMs get the same prefilled RAM file (per MiB: half zero pages, a
quarter random bytes, a quarter repeated text) as their guest RAM
(`-mem-path` for snapvm; `memory-backend-file,share=on` for QEMU), and a
fresh qcow2 image of the same kind.  For each RAM size it measures, for
each VMM:

  save: guest pause (STOP..RESUME events), total time (command .. done),
        bytes written (the VMM's write() bytes, /proc/PID/io), the image's
        vm-state-size, query-status round trips from a second client while
        the save runs (p50/p99/max), and the VMM's peak RSS (VmHWM);
  load: in a fresh process of the same VMM, the time from the command to the
        guest running again (RESUME), the total time, and from the command's
        return to the guest running.

A second snapvm save runs with the guest rewriting RAM from ring 3 at
100 MB/s (QEMU's guest cannot be made to do that here, and QEMU stops the
guest for the whole save anyway).  The machine's own limits, measured in the
same run, come first: write bandwidth ending in fdatasync, page-cache read
bandwidth and memcpy bandwidth (build/bench/bandwidth).

Usage: bench/snapshot_bench.py [--sizes 1,4,8] [--dir DIR]
Needs root (KVM), qemu-system-x86_64 and qemu-img, and a built tree.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "functional"))
from qmp import QMP  # noqa: E402  (the test suite's client, written from the QMP spec)

SNAPVM = os.path.join(ROOT, "build", "snapvm")
BANDWIDTH = os.path.join(ROOT, "build", "bench", "bandwidth")
MiB = 1 << 20


def make_ram_file(path, size):
    """Per MiB: 2 zero pages of 4, 1 of random bytes, 1 of repeated text."""
    rnd = os.urandom(MiB // 4)
    text = (b"snapvm benchmark: the quick brown fox jumps over the lazy dog. " * 5000)[:MiB // 4]
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, MiB):
            # The zero half stays a hole: the file is sparse and reads as zeros.
            f.seek(off + MiB // 2)
            f.write(rnd)
            f.write(text)


def copy_sparse(src, dst):
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)


def wchar(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def ts(event):
    t = event["timestamp"]
    return t["seconds"] + t["microseconds"] / 1e6


def connect(path, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return QMP(f"unix:{path}", timeout=300)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Poller:
    """query-status round trips from a second client, in a thread."""

    def __init__(self, sock):
        self.qmp = connect(sock)
        self.lat = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.qmp.cmd("query-status")
            self.lat.append(time.monotonic() - t0)
            time.sleep(0.002)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.qmp.close()

    def summary(self):
        if not self.lat:
            return {"n": 0}
        lat = sorted(self.lat)
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3  # noqa: E731
        return {"n": len(lat), "p50_ms": p(0.50), "p99_ms": p(0.99), "max_ms": lat[-1] * 1e3}


class VMM:
    def __init__(self, kind, workdir, size, image, ram_file=None, name="vm"):
        self.kind, self.size, self.image = kind, size, image
        self.sock = os.path.join(workdir, f"{kind}-{name}.sock")
        # A second monitor for the latency poller: QEMU serves one client per socket.
        self.poll_sock = os.path.join(workdir, f"{kind}-{name}-poll.sock")
        mib = size // MiB
        if kind == "snapvm":
            argv = [SNAPVM, "-m", f"{mib}M", "-append", "tick_ms=100", "-serial", "stdio",
                    "-blockdev",
                    f"driver=qcow2,node-name=disk0,file.driver=file,file.filename={image}",
                    "-device", "virtio-blk-pci,drive=disk0"]
            if ram_file:
                argv += ["-mem-path", ram_file]
        else:
            argv = ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-serial", "none",
                    "-machine", "pc,accel=kvm", "-m", f"{mib}M", "-blockdev",
                    f"driver=qcow2,node-name=disk0,file.driver=file,file.filename={image}",
                    "-device", "virtio-blk-pci,drive=disk0"]
            # The RAM block must be named alike when saving and loading: a
            # prefilled file to save from, anonymous memory to load into.
            backend = (f"memory-backend-file,id=ram0,size={mib}M,mem-path={ram_file},share=on"
                       if ram_file else f"memory-backend-ram,id=ram0,size={mib}M")
            argv += ["-object", backend, "-machine", "memory-backend=ram0"]
        argv += ["-qmp", f"unix:{self.sock},server=on,wait=off",
                 "-qmp", f"unix:{self.poll_sock},server=on,wait=off"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.qmp = connect(self.sock)

    def guest(self, line):
        """A command on the built-in guest's serial line (snapvm only)."""
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def wait_event(self, name, after):
        while True:
            for e in self.qmp.events:
                if e["event"] == name and ts(e) >= after:
                    return ts(e)
            self.qmp.recv_event()

    def quit(self):
        try:
            self.qmp.cmd("quit")
        except Exception:
            pass
        self.proc.wait(timeout=60)
        self.qmp.close()


def qmp_recv_event(self):
    msg = self._read_message(900)
    if "event" in msg:
        self.events.append(msg)


QMP.recv_event = qmp_recv_event


def wait_job(vmm, job_id):
    """Wait for a QEMU job to conclude; fail loudly if it failed."""
    q = vmm.qmp
    while not any(e["event"] == "JOB_STATUS_CHANGE" and e["data"]["status"] == "concluded"
                  and e["data"]["id"] == job_id for e in q.events):
        q.recv_event()
    job = next(j for j in q.cmd("query-jobs") if j["id"] == job_id)
    if "error" in job:
        raise RuntimeError(f"{vmm.kind} {job['type']}: {job['error']}")


def save(vmm, tag):
    q = vmm.qmp
    q.events.clear()
    w0 = wchar(vmm.proc.pid)
    with Poller(vmm.poll_sock) as poller:
        t0 = time.time()
        if vmm.kind == "snapvm":
            q.cmd("savevm", tag=tag)
        else:
            q.cmd("snapshot-save", job_id="save", tag=tag, vmstate="disk0", devices=["disk0"])
            wait_job(vmm, "save")
        total = time.time() - t0
    stop = vmm.wait_event("STOP", t0)
    resume = vmm.wait_event("RESUME", t0)
    return {"pause_ms": (resume - stop) * 1e3, "total_s": total,
            "bytes_written": wchar(vmm.proc.pid) - w0, "query_status": poller.summary(),
            "peak_rss_mib": vm_hwm_kib(vmm.proc.pid) / 1024}


def load(vmm, tag):
    q = vmm.qmp
    q.events.clear()
    t0 = time.time()
    if vmm.kind == "snapvm":
        q.cmd("loadvm", tag=tag)
    else:
        q.cmd("snapshot-load", job_id="load", tag=tag, vmstate="disk0", devices=["disk0"])
        wait_job(vmm, "load")
    done = time.time()
    resume = vmm.wait_event("RESUME", t0)
    return {"to_running_ms": (resume - t0) * 1e3, "total_s": done - t0,
            "running_after_return_ms": max(0.0, resume - done) * 1e3,
            "peak_rss_mib": vm_hwm_kib(vmm.proc.pid) / 1024}


def vm_state_size(image, tag):
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", image],
                                     capture_output=True, text=True, check=True).stdout)
    return next(s["vm-state-size"] for s in info.get("snapshots", []) if s["name"] == tag)


def run_one(kind, size, workdir, ram_master, dirty_mbps=0):
    image = os.path.join(workdir, f"{kind}.qcow2")
    ram = os.path.join(workdir, f"{kind}.ram")
    for p in (image, ram):
        if os.path.exists(p):
            os.unlink(p)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "4G"], check=True)
    copy_sparse(ram_master, ram)
    vmm = VMM(kind, workdir, size, image, ram_file=ram)
    time.sleep(1.0)
    if dirty_mbps:
        vmm.guest(f"dirty {dirty_mbps}")
        time.sleep(1.0)
    result = {"save": save(vmm, "bench")}
    vmm.quit()
    os.unlink(ram)
    result["save"]["vm_state_size"] = vm_state_size(image, "bench")
    if not dirty_mbps:
        vmm = VMM(kind, workdir, size, image, name="load")
        time.sleep(1.0)
        result["load"] = load(vmm, "bench")
        vmm.quit()
    os.unlink(image)
    return result


def fmt_row(name, snap, qemu, unit, better="lower"):
    if snap is None or qemu is None:
        return f"  {name:34s} {snap!s:>12} {qemu!s:>12}"
    ratio = (qemu / snap) if snap else float("inf")
    return (f"  {name:34s} {snap:12.2f} {qemu:12.2f} {unit:4s}  snapvm is "
            f"{ratio:.1f}x {'better' if ratio >= 1 else 'worse'}")


def report(size, snap, qemu, dirty):
    gib = size / (1 << 30)
    print(f"\n== {gib:g} GiB guest ==   {'snapvm':>12} {'QEMU 7.2':>12}")
    s, q = snap["save"], qemu["save"]
    print(fmt_row("save: guest pause", s["pause_ms"], q["pause_ms"], "ms"))
    print(fmt_row("save: total time", s["total_s"], q["total_s"], "s"))
    print(fmt_row("save: bytes written", s["bytes_written"] / MiB, q["bytes_written"] / MiB,
                  "MiB"))
    print(fmt_row("save: vm-state-size", s["vm_state_size"] / MiB, q["vm_state_size"] / MiB,
                  "MiB"))
    print(fmt_row("save: query-status p99", s["query_status"].get("p99_ms"),
                  q["query_status"].get("p99_ms"), "ms"))
    print(fmt_row("save: peak RSS", s["peak_rss_mib"], q["peak_rss_mib"], "MiB"))
    sl, ql = snap["load"], qemu["load"]
    print(fmt_row("load: command to guest running", sl["to_running_ms"], ql["to_running_ms"],
                  "ms"))
    print(fmt_row("load: total time", sl["total_s"], ql["total_s"], "s"))
    print(fmt_row("load: running after return", sl["running_after_return_ms"],
                  ql["running_after_return_ms"], "ms"))
    print(fmt_row("load: peak RSS", sl["peak_rss_mib"], ql["peak_rss_mib"], "MiB"))
    d = dirty["save"]
    print(f"  snapvm, guest dirtying 100 MB/s: pause {d['pause_ms']:.2f} ms, total "
          f"{d['total_s']:.2f} s, written {d['bytes_written'] / MiB:.0f} MiB, query-status p99 "
          f"{d['query_status'].get('p99_ms', 0):.2f} ms, peak RSS {d['peak_rss_mib']:.0f} MiB")
    print("  targets: pause <= 20 ms; save time <= QEMU's; bytes <= QEMU's vm-state-size; "
          "running <= 10 ms after loadvm returns; query-status p99 <= 5 ms; "
          f"peak RSS <= {gib * 1024 + 64:.0f} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4,8", help="guest RAM sizes in GiB")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write all results here")
    args = ap.parse_args()
    for tool in (SNAPVM, BANDWIDTH):
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool} is not built: run scripts/build.sh")
    workdir = tempfile.mkdtemp(prefix="snapvm-bench-", dir=args.dir)
    results = {}
    try:
        bw = json.loads(subprocess.run([BANDWIDTH, workdir, "1024"], capture_output=True,
                                       text=True, check=True).stdout)
        results["machine"] = bw
        print(f"machine: write+fdatasync {bw['fdatasync_write_mib_s']:.0f} MiB/s, page-cache "
              f"read {bw['pagecache_read_mib_s']:.0f} MiB/s, memcpy {bw['memcpy_mib_s']:.0f} "
              f"MiB/s")
        for gib in [float(x) for x in args.sizes.split(",")]:
            size = int(gib * (1 << 30))
            master = os.path.join(workdir, "ram.master")
            make_ram_file(master, size)
            snap = run_one("snapvm", size, workdir, master)
            qemu = run_one("qemu", size, workdir, master)
            dirty = run_one("snapvm", size, workdir, master, dirty_mbps=100)
            os.unlink(master)
            results[f"{gib:g}GiB"] = {"snapvm": snap, "qemu": qemu, "snapvm_dirty100": dirty}
            report(size, snap, qemu, dirty)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
