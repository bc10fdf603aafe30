#!/usr/bin/python3
"""Whole-VM snapshot save and load: snapvm against QEMU 7.2, side by side.

Both VMMs get the same prefilled RAM file (per MiB: half zero pages, a
quarter random bytes, a quarter repeated text) as their guest RAM
(`-mem-path` for snapvm; `memory-backend-file,share=on` for QEMU), and a
fresh qcow2 image of the same kind.  For each RAM size it measures, for
each VMM:

  save: guest pause (STOP..RESUME events), total time (command .. done),
        bytes written (what the VMM sent to storage, /proc/PID/io), the image's
        vm-state-size, query-status round trips from a second client while
        the save runs (p50/p99/max), and the VMM's peak RSS (VmHWM);
  load: in a fresh process of the same VMM, the time from the command to the
        guest running again (RESUME), the total time, and from the command's
        return to the guest running.

The same again with zero pages interleaved with data at 4 KiB (save time,
image growth).  The incremental case: after the first save the guest
rewrites 64 MiB and the VMM saves again (QEMU writes all RAM again); the
revert case: after a load the guest changes 16 MiB and the snapshot just
loaded is loaded again.  The ratios at the end of each size compare with
QEMU and with the disk limit (non-zero bytes / write+fdatasync bandwidth,
the faster of buffered and O_DIRECT).

A second snapvm save runs with the guest rewriting RAM from ring 3 at
100 MB/s (QEMU's guest cannot be made to do that here, and QEMU stops the
guest for the whole save anyway).  The machine's own limits, measured in the
same run, come first: write bandwidth ending in fdatasync (buffered and
O_DIRECT), page-cache read
bandwidth and memcpy bandwidth, and what a plain C writer needs for the
4K-interleaved pattern (build/bench/bandwidth): on ext4 that pattern is
bound by the number of writes the holes split it into, not by bandwidth.

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

BUILD = os.path.join(ROOT, os.environ.get("SNAPVM_BUILD") or "build")  # as the tests' conftest
SNAPVM = os.path.join(BUILD, "snapvm")
BANDWIDTH = os.path.join(BUILD, "bench", "bandwidth")
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


def make_interleaved_ram_file(path, size):
    """Zero pages interleaved with data at 4 KiB: per 8 KiB, one page of
    random bytes, then one zero page (a hole), as real guest RAM often is."""
    rnd = os.urandom(MiB)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, MiB):
            f.seek(off)
            for p in range(0, MiB, 8192):
                f.seek(off + p)
                f.write(rnd[p:p + 4096])


def copy_sparse(src, dst):
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)


def proc_field(path, key):
    """The number after `key:` in a /proc file of "key: value" lines (0 if absent)."""
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def wchar(pid):
    """Bytes the VMM caused to be written to storage (/proc/PID/io
    write_bytes: counts every thread, io_uring workers included, and
    whatever path the writes took -- write(), io_uring, mmap)."""
    return proc_field(f"/proc/{pid}/io", "write_bytes")


def vm_hwm_kib(pid):
    return proc_field(f"/proc/{pid}/status", "VmHWM")


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


JOBS = [0]


def next_job_id(kind):
    """QEMU keeps concluded jobs until dismissed: every job a new id."""
    JOBS[0] += 1
    return f"{kind}{JOBS[0]}"


def save(vmm, tag):
    q = vmm.qmp
    q.events.clear()
    w0 = wchar(vmm.proc.pid)
    with Poller(vmm.poll_sock) as poller:
        t0 = time.time()
        if vmm.kind == "snapvm":
            q.cmd("savevm", tag=tag)
        else:
            job = next_job_id("save")
            q.cmd("snapshot-save", job_id=job, tag=tag, vmstate="disk0", devices=["disk0"])
            wait_job(vmm, job)
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
        job = next_job_id("load")
        q.cmd("snapshot-load", job_id=job, tag=tag, vmstate="disk0", devices=["disk0"])
        wait_job(vmm, job)
    done = time.time()
    resume = vmm.wait_event("RESUME", t0)
    return {"to_running_ms": (resume - t0) * 1e3, "total_s": done - t0,
            "running_after_return_ms": max(0.0, resume - done) * 1e3,
            "peak_rss_mib": vm_hwm_kib(vmm.proc.pid) / 1024}


def vm_state_size(image, tag):
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", image],
                                     capture_output=True, text=True, check=True).stdout)
    return next(s["vm-state-size"] for s in info.get("snapshots", []) if s["name"] == tag)


def allocated(path):
    return os.stat(path).st_blocks * 512


def data_bytes(path):
    """Bytes of a sparse file that are not holes (the RAM files' zero pages are holes)."""
    total, off = 0, 0
    with open(path, "rb") as f:
        fd, end = f.fileno(), os.fstat(f.fileno()).st_size
        while off < end:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            total += stop - start
            off = stop
    return total


def timed_save(vmm, tag, image):
    before = allocated(image)
    r = save(vmm, tag)
    r["image_growth"] = allocated(image) - before
    return r


def run_one(kind, size, workdir, ram_master, dirty_mbps=0, incremental=False):
    """One VMM: a full save (growth, bytes, pause); with `incremental`, the
    guest then rewrites 64 MiB and the VMM saves again; then, in a fresh
    process, a load, and with `incremental` a revert after 16 MiB changed
    (load of the snapshot just loaded) and a save after the load."""
    image = os.path.join(workdir, f"{kind}.qcow2")
    ram = os.path.join(workdir, f"{kind}.ram")
    for p in (image, ram):
        if os.path.exists(p):
            os.unlink(p)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "4G"], check=True)
    copy_sparse(ram_master, ram)
    # The RAM files just written are still dirty in the page cache: left so,
    # their writeback (the interleaved ones: one disk write per page) runs
    # during the save measured and is charged to whichever VMM comes first.
    os.sync()
    vmm = VMM(kind, workdir, size, image, ram_file=ram)
    time.sleep(1.0)
    if dirty_mbps:
        vmm.guest(f"dirty {dirty_mbps}")
        time.sleep(1.0)
    result = {"save": timed_save(vmm, "bench", image)}
    if incremental:
        if kind == "snapvm":
            vmm.guest("fill 7 64")  # the built-in guest rewrites 64 MiB from ring 3
            time.sleep(1.0)
        result["save2"] = timed_save(vmm, "bench2", image)
    vmm.quit()
    os.unlink(ram)
    result["save"]["vm_state_size"] = vm_state_size(image, "bench")
    if not dirty_mbps:
        vmm = VMM(kind, workdir, size, image, name="load")
        time.sleep(1.0)
        result["load"] = load(vmm, "bench")
        if incremental:
            if kind == "snapvm":
                vmm.guest("fill 8 16")
                time.sleep(1.0)
            result["revert"] = load(vmm, "bench")
        vmm.quit()
    os.unlink(image)
    return result


def fmt_row(name, snap, qemu, unit, better="lower"):
    if snap is None or qemu is None:
        return f"  {name:34s} {snap!s:>12} {qemu!s:>12}"
    ratio = (qemu / snap) if snap else float("inf")
    return (f"  {name:34s} {snap:12.2f} {qemu:12.2f} {unit:4s}  snapvm is "
            f"{ratio:.1f}x {'better' if ratio >= 1 else 'worse'}")


def report(size, snap, qemu, dirty, inter_snap, inter_qemu, bw, nonzero, nonzero_inter):
    gib = size / (1 << 30)
    # The disk's limit: the faster of writing through the page cache and direct.
    disk_mib_s = max(bw["fdatasync_write_mib_s"], bw["direct_write_mib_s"])
    limit = nonzero / MiB / disk_mib_s
    limit_inter = nonzero_inter / MiB / disk_mib_s
    print(f"\n== {gib:g} GiB guest ==   {'snapvm':>12} {'QEMU 7.2':>12}")
    s, q = snap["save"], qemu["save"]
    print(fmt_row("save: guest pause", s["pause_ms"], q["pause_ms"], "ms"))
    print(fmt_row("save: total time", s["total_s"], q["total_s"], "s"))
    print(fmt_row("save: bytes written", s["bytes_written"] / MiB, q["bytes_written"] / MiB,
                  "MiB"))
    print(fmt_row("save: image growth", s["image_growth"] / MiB, q["image_growth"] / MiB, "MiB"))
    print(fmt_row("save: vm-state-size", s["vm_state_size"] / MiB, q["vm_state_size"] / MiB,
                  "MiB"))
    print(fmt_row("save: query-status p99", s["query_status"].get("p99_ms"),
                  q["query_status"].get("p99_ms"), "ms"))
    print(fmt_row("save: peak RSS", s["peak_rss_mib"], q["peak_rss_mib"], "MiB"))
    si, qi = inter_snap["save"], inter_qemu["save"]
    print(fmt_row("save, 4K-interleaved zeros: time", si["total_s"], qi["total_s"], "s"))
    print(fmt_row("save, 4K-interleaved zeros: growth", si["image_growth"] / MiB,
                  qi["image_growth"] / MiB, "MiB"))
    print(fmt_row("save, 4K-interleaved zeros: pause", si["pause_ms"], qi["pause_ms"], "ms"))
    s2, q2 = snap["save2"], qemu["save2"]
    print(fmt_row("2nd save, 64 MiB changed: time", s2["total_s"], q2["total_s"], "s"))
    print(fmt_row("2nd save, 64 MiB changed: written", s2["bytes_written"] / MiB,
                  q2["bytes_written"] / MiB, "MiB"))
    print(fmt_row("2nd save, 64 MiB changed: growth", s2["image_growth"] / MiB,
                  q2["image_growth"] / MiB, "MiB"))
    print(fmt_row("2nd save, 64 MiB changed: pause", s2["pause_ms"], q2["pause_ms"], "ms"))
    sl, ql = snap["load"], qemu["load"]
    print(fmt_row("load: command to guest running", sl["to_running_ms"], ql["to_running_ms"],
                  "ms"))
    print(fmt_row("load: total time", sl["total_s"], ql["total_s"], "s"))
    print(fmt_row("load: running after return", sl["running_after_return_ms"],
                  ql["running_after_return_ms"], "ms"))
    print(fmt_row("load: peak RSS", sl["peak_rss_mib"], ql["peak_rss_mib"], "MiB"))
    sr, qr = snap["revert"], qemu["revert"]
    print(fmt_row("revert (16 MiB changed): to running", sr["to_running_ms"],
                  qr["to_running_ms"], "ms"))
    d = dirty["save"]
    print(f"  snapvm, guest dirtying 100 MB/s: pause {d['pause_ms']:.2f} ms, total "
          f"{d['total_s']:.2f} s, written {d['bytes_written'] / MiB:.0f} MiB, query-status p99 "
          f"{d['query_status'].get('p99_ms', 0):.2f} ms, peak RSS {d['peak_rss_mib']:.0f} MiB")
    print(f"  disk limit (non-zero bytes / write+fdatasync bandwidth, {disk_mib_s:.0f} MiB/s): "
          f"{limit:.2f} s; "
          f"4K-interleaved {limit_inter:.2f} s")
    # The interleaved pattern is bound by the number of writes (every hole
    # splits them), not by bandwidth: what a plain writer needs for it.
    scale = size / (bw["interleaved_span_mib"] * MiB)  # measured over that span
    buffered, overlapped, direct = (bw[k] * scale for k in (
        "interleaved_s", "interleaved_overlap_s", "interleaved_direct_s"))
    pattern = min([buffered, overlapped] + ([direct] if direct else []))  # 0: no O_DIRECT
    print(f"  4K-interleaved pattern, plain C writer (pwrite per page + fdatasync): "
          f"{buffered:.2f} s, with its writeback overlapped {overlapped:.2f} s, direct "
          f"{direct:.2f} s (measured over {bw['interleaved_span_mib']} MiB, scaled); "
          f"snapvm/the fastest {si['total_s'] / pattern:.2f}")
    print(f"  ratios: save time snapvm/QEMU {s['total_s'] / q['total_s']:.2f} (target <= 0.8), "
          f"interleaved {si['total_s'] / qi['total_s']:.2f}; snapvm/disk limit "
          f"{s['total_s'] / limit:.2f}, interleaved {si['total_s'] / limit_inter:.2f} "
          f"(target <= 1.15); growth snapvm/QEMU vmstate "
          f"{s['image_growth'] / q['vm_state_size']:.2f}, interleaved "
          f"{si['image_growth'] / qi['vm_state_size']:.2f} (target <= 1)")
    print(f"  targets: pause <= 20 ms; 2nd save <= 80 MiB written and <= 0.5 s (at 8 GiB); "
          f"load <= 10 ms; revert <= 2 ms; peak RSS <= {gib * 1024 + 64:.0f} MiB")


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
        print(f"machine: write+fdatasync {bw['fdatasync_write_mib_s']:.0f} MiB/s (direct "
              f"{bw['direct_write_mib_s']:.0f} MiB/s), page-cache "
              f"read {bw['pagecache_read_mib_s']:.0f} MiB/s, memcpy {bw['memcpy_mib_s']:.0f} "
              f"MiB/s; 4K-interleaved pattern over {bw['interleaved_span_mib']} MiB "
              f"{bw['interleaved_s']:.2f} s ({bw['interleaved_overlap_s']:.2f} s overlapped, "
              f"{bw['interleaved_direct_s']:.2f} s direct)")
        for gib in [float(x) for x in args.sizes.split(",")]:
            size = int(gib * (1 << 30))
            master = os.path.join(workdir, "ram.master")
            make_ram_file(master, size)
            nonzero = data_bytes(master)
            snap = run_one("snapvm", size, workdir, master, incremental=True)
            qemu = run_one("qemu", size, workdir, master, incremental=True)
            dirty = run_one("snapvm", size, workdir, master, dirty_mbps=100)
            make_interleaved_ram_file(master, size)
            nonzero_inter = data_bytes(master)
            inter_snap = run_one("snapvm", size, workdir, master)
            inter_qemu = run_one("qemu", size, workdir, master)
            os.unlink(master)
            results[f"{gib:g}GiB"] = {"snapvm": snap, "qemu": qemu, "snapvm_dirty100": dirty,
                                      "snapvm_interleaved": inter_snap,
                                      "qemu_interleaved": inter_qemu,
                                      "nonzero_bytes": nonzero,
                                      "nonzero_bytes_interleaved": nonzero_inter}
            report(size, snap, qemu, dirty, inter_snap, inter_qemu, bw, nonzero, nonzero_inter)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
