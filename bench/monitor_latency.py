#!/usr/bin/env python3
"""Monitor latency: p50/p99/max of query-status round trips.

    /usr/bin/python3 bench/monitor_latency.py [--count N] [--clients K] [--qemu]

Runs build/snapvm with its built-in guest running (busy), and, when the
snapshot work provides snapshot-save and a disk is given (--disk
IMAGE.qcow2), with a snapshot-save job running in the background the
whole time, restarted as often as needed.  K clients query concurrently;
each round trip is timed from send to reply.  With --qemu, the same
measurement runs against qemu-system-x86_64 (-machine none, paused) on
this machine, for comparison.  On demand only: not part of the test suite.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "functional"))
from qmp import QMP, QMPError, SnapVM  # noqa: E402


def measure(connect, count, clients, seconds=None):
    """count round trips per client, or as many as fit in `seconds`."""
    samples, lock = [], threading.Lock()
    end = time.monotonic() + seconds if seconds else None

    def worker():
        with connect() as q:
            mine = []
            while (time.monotonic() < end) if end else len(mine) < count:
                t = time.perf_counter()
                q.cmd("query-status")
                mine.append((time.perf_counter() - t) * 1e6)
            with lock:
                samples.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples.sort()
    return samples


def report(name, samples):
    q = statistics.quantiles(samples, n=100)
    print(f"{name:40s} n={len(samples):6d}  p50={q[49]:8.1f} us  p99={q[98]:8.1f} us  "
          f"max={samples[-1]:9.1f} us")


class BackgroundSaves:
    """Keeps snapshot-save jobs running while the measurement runs."""

    def __init__(self, vm, disk_node):
        self.q = vm.connect()
        self.node = disk_node
        self.stop = threading.Event()
        self.jobs = 0
        self.thread = threading.Thread(target=self.run)

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            job = f"bench{n}"
            self.q.cmd("snapshot-save", job_id=job, tag=f"bench{n}", vmstate=self.node,
                       devices=[self.node])
            self.q.event("JOB_STATUS_CHANGE", timeout=600, match={"id": job,
                                                                 "status": "concluded"})
            self.q.cmd("job-dismiss", id=job)
            self.q.cmd("snapshot-delete", job_id=f"del{n}", tag=f"bench{n}",
                       devices=[self.node])
            self.q.event("JOB_STATUS_CHANGE", timeout=600, match={"id": f"del{n}",
                                                                 "status": "concluded"})
            self.q.cmd("job-dismiss", id=f"del{n}")
            self.jobs += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.q.close()


def bench_snapvm(args):
    extra = []
    if args.disk:
        extra += ["-blockdev", f"driver=qcow2,node-name=disk0,file.driver=file,"
                               f"file.filename={args.disk}",
                  "-device", "virtio-blk-pci,drive=disk0"]
    with SnapVM(extra_args=extra + args.snapvm_args) as vm:
        report("snapvm, guest running", measure(vm.connect, args.count, args.clients))
        commands = {c["name"] for c in vm.qmp.cmd("query-commands")}
        if args.disk and "snapshot-save" in commands:
            with BackgroundSaves(vm, "disk0") as bg:
                time.sleep(0.2)
                samples = measure(vm.connect, args.count, args.clients, args.seconds)
            report(f"snapvm, snapshot-save running ({bg.jobs} done)", samples)
        elif args.disk:
            print("snapvm has no snapshot-save yet: measured with the guest busy only")


def bench_qemu(args):
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "qmp.sock")
        proc = subprocess.Popen(["qemu-system-x86_64", "-machine", "none", "-nodefaults",
                                 "-display", "none", "-S", "-qmp",
                                 f"unix:{sock},server=on,wait=off"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(500):
                if os.path.exists(sock):
                    break
                time.sleep(0.01)
            report("qemu-system-x86_64 -M none, paused",
                   measure(lambda: QMP(sock), args.count, args.clients))
        finally:
            proc.kill()
            proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=2000, help="round trips per client")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0,
                   help="how long to measure while snapshot-save jobs run")
    p.add_argument("--disk", help="a qcow2 image to attach (enables the snapshot-save load)")
    p.add_argument("--qemu", action="store_true", help="also measure QEMU")
    p.add_argument("snapvm_args", nargs="*", help="extra snapvm arguments (after --)")
    args = p.parse_args()
    bench_snapvm(args)
    if args.qemu:
        bench_qemu(args)


if __name__ == "__main__":
    try:
        main()
    except QMPError as e:
        sys.exit(f"QMP error: {e}")
