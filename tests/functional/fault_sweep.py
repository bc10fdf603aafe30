#!/usr/bin/python3
"""Fault sweeps over whole-VM snapshot operations (issue 9, item 7).

For one operation (savevm, loadvm, delvm, and the snapshot-save/-load/
-delete jobs) on the built-in guest with two qcow2 disks: count its host
writes and flushes through snapvm's fault-injection socket, then for each N
fail the Nth write (or flush) with EIO or ENOSPC and check, each time:

  - the command's outcome is an error that says what failed, or success
    (a fault in cleanup after the commit point must not fail the op);
  - the VM is as before (running, RAM checksum, disk sectors, tick moving),
    or, for a load, the documented stopped state (paused, and a retried
    load then works);
  - a failed command left no trace: the snapshot list is unchanged, and
    `qemu-img check` finds no corruption and no leaked cluster (a
    succeeded one may leak: cleanup "at worst, leaks");
  - in a fresh snapvm on the same images, every snapshot that must exist
    loads and verifies: RAM checksum, disk sectors, tick;
  - `qemu-img check` again finds no corruption.

As a script (the full sweep, on demand), it prints the counts per operation:

    /usr/bin/python3 tests/functional/fault_sweep.py [--ops delvm,loadvm]
        [--errnos EIO,ENOSPC] [--kinds write,flush] [--every K] [--n N,..] [-v]

The CI test (test_fault_sweep.py) runs a short sample of the same sweep.
SNAPVM_BUILD selects the build whose snapvm runs (conftest.py).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from faultctl import FaultCtl, fault_env  # noqa: E402
from qmp import QMPError  # noqa: E402
from snapshot_vm import Disk, Guest  # noqa: E402

MEM = "16"           # MiB of guest RAM: a small vmstate keeps the write count low
FILL_MB = 2
DISKS = ("d0", "d1")
SECTORS = ((0, 10), (1, 20))  # (disk, lba) the states differ in
NEW = "new"                   # tag a save creates


def disks():
    return [Disk(name, "qcow2", "16M") for name in DISKS]


class State:
    """What the guest holds: RAM checksum and the two sectors (and the tick
    at which a snapshot was taken, for snapshots)."""

    def __init__(self, ram, sectors, tick=None):
        self.ram, self.sectors, self.tick = ram, tuple(sectors), tick

    @staticmethod
    def read(g):
        return State(g.guest.sum(), [g.sector(d, lba) for d, lba in SECTORS])

    def same_contents(self, other):
        return self.ram == other.ram and self.sectors == other.sectors

    def __repr__(self):
        return f"State(ram={self.ram:016x}, sectors={self.sectors}, tick={self.tick})"


def set_state(g, seed):
    assert g.guest.cmd(f"fill {seed} {FILL_MB}") == "ok"
    for d, lba in SECTORS:
        assert g.guest.cmd(f"disk write {d} {lba} {seed * 100 + d}") == "ok"
    return State.read(g)


OPS = ("savevm", "loadvm", "delvm", "snapshot-save", "snapshot-load", "snapshot-delete")


def run_op(g, op):
    """Run `op`; return None on success or the error text."""
    tag = {"savevm": NEW, "snapshot-save": NEW, "loadvm": "base", "snapshot-load": "base",
           "delvm": "second", "snapshot-delete": "second"}[op]
    try:
        if op in ("savevm", "loadvm", "delvm"):
            g.qmp.cmd(op, tag=tag)
            return None
        args = {"job_id": "j", "tag": tag, "devices": list(DISKS)}
        if op != "snapshot-delete":
            args["vmstate"] = "d0"
        g.qmp.cmd(op, **args)
        job = g.wait_job("j")
        g.qmp.cmd("job-dismiss", id="j")
        return job.get("error")
    except QMPError as e:
        return e.desc


class Template:
    """Images holding two snapshots, 'base' and 'second', made once."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "template")
        os.makedirs(self.dir)
        self.snaps = {}
        with Guest(self.dir, disks=disks(), mem=MEM) as g:
            for seed, tag in ((1, "base"), (2, "second")):
                st = set_state(g, seed)
                st.tick = g.paused_tick()
                g.qmp.cmd("savevm", tag=tag)
                g.qmp.cmd("cont")
                self.snaps[tag] = st
        for d in disks():
            assert qemu_img_check(d.path(self.dir)) == (0, 0)

    def copy_to(self, rundir):
        os.makedirs(rundir)
        for d in disks():
            shutil.copyfile(d.path(self.dir), d.path(rundir))


class Result:
    def __init__(self, op, spec):
        self.op, self.spec = op, spec
        self.error = None      # the command's error text, None if it succeeded
        self.injected = 0
        self.stopped = False   # a failed load left the VM in the documented stopped state
        self.leaks = 0         # leaked clusters after a succeeded op (tolerated)
        self.copied_flag_errors = 0  # after a kill: OFLAG_COPIED mismatches (repaired on open)
        self.problems = []

    @property
    def ok(self):
        return not self.problems

    def __repr__(self):
        what = "ok" if self.error is None else f"failed: {self.error}"
        return (f"{self.op} [{self.spec}] injected={self.injected} {what}"
                + (" (stopped)" if self.stopped else "")
                + ("".join(f"\n    PROBLEM: {p}" for p in self.problems)))


def expected_after(op, snaps, cur, succeeded):
    """The snapshots that must exist after `op`, with their states."""
    want = dict(snaps)
    if succeeded and op in ("savevm", "snapshot-save"):
        want[NEW] = cur
    if succeeded and op in ("delvm", "snapshot-delete"):
        del want["second"]
    return want


def verify_snapshots(rundir, want, r):
    """Fresh snapvm on the images: every snapshot in `want` loads and verifies."""
    with Guest(rundir, disks=disks(), mem=MEM, name="verify") as g:
        tags = sorted(s["tag"] for s in g.qmp.cmd("query-snapshots"))
        if tags != sorted(want):
            r.problems.append(f"a fresh snapvm lists snapshots {tags}, expected {sorted(want)}")
        for tag, st in want.items():
            if tag not in tags:
                continue
            g.next_tick()
            g.stop_for_load()
            try:
                g.qmp.cmd("loadvm", tag=tag)
            except QMPError as e:
                r.problems.append(f"snapshot '{tag}' no longer loads: {e.desc}")
                g.qmp.cmd("cont")
                continue
            g.qmp.cmd("cont")
            tick = g.next_tick()
            got = State.read(g)
            if not got.same_contents(st):
                r.problems.append(f"snapshot '{tag}' loads as {got}, saved as {st}")
            if st.tick is not None and tick != st.tick + 1:
                r.problems.append(f"snapshot '{tag}' resumes at tick {tick}, saved at {st.tick}")
            elif st.tick is None and tick is None:
                r.problems.append(f"snapshot '{tag}': the guest does not tick")


def qemu_img_check(path):
    """(errors, leaks) from `qemu-img check`; corruption is a result here, not an exception."""
    p = subprocess.run(["qemu-img", "check", "--output=json", path], capture_output=True,
                       text=True)
    try:
        info = json.loads(p.stdout)
    except ValueError:
        return 1, 0  # check could not even read the image: count it as an error
    return info.get("corruptions", 0) + info.get("check-errors", 0), info.get("leaks", 0)


def check_images(rundir, r, failed, when):
    for d in disks():
        errors, leaks = qemu_img_check(d.path(rundir))
        if errors:
            r.problems.append(f"{when}: qemu-img check: {errors} errors in {d.name}")
        if leaks and failed:
            r.problems.append(f"{when}: the failed command leaked {leaks} clusters in {d.name}")
        r.leaks += 0 if failed else leaks


def one_run(template, rundir, op, spec=None, counts_out=None):
    """One operation on a copy of the template images, with the fault `spec`
    armed just before it (None: no fault, only count).  Returns a Result."""
    template.copy_to(rundir)
    env = fault_env(rundir)
    r = Result(op, spec)
    g = Guest(rundir, disks=disks(), mem=MEM, env=env).start()
    try:
        f = FaultCtl(env["SNAPVM_FAULT_CTL"])
        cur = set_state(g, 3)
        saving = op in ("savevm", "snapshot-save")
        if saving:
            cur.tick = g.paused_tick()  # a paused save: the new snapshot's tick is known
        before = sorted(s["tag"] for s in g.qmp.cmd("query-snapshots"))
        status_before = g.qmp.cmd("query-status")["status"]
        f.reset()
        if spec:
            f.arm(spec)
        r.error = run_op(g, op)
        c = f.counts()
        f.disarm()
        r.injected = c["injected"]
        if counts_out is not None:
            counts_out.update(c)
        failed = r.error is not None
        if failed and spec is None:
            r.problems.append(f"failed without a fault: {r.error}")
        want = expected_after(op, template.snaps, cur, not failed)
        tags = sorted(s["tag"] for s in g.qmp.cmd("query-snapshots"))
        if failed and tags != before:
            r.problems.append(f"the failed command changed the snapshot list: {before} -> {tags}")
        elif tags != sorted(want):
            r.problems.append(f"query-snapshots lists {tags}, expected {sorted(want)}")
        status = g.qmp.cmd("query-status")["status"]
        loading = op in ("loadvm", "snapshot-load")
        if failed and loading and status != status_before:
            # QEMU's rule: a load that fails after its commit leaves the VM stopped.
            r.stopped = True
            if status != "paused":
                r.problems.append(f"a failed load left the VM '{status}'")
            g.guest.drain()
            again = run_op(g, op)
            if again is not None:
                r.problems.append(f"the load retried without a fault fails: {again}")
            else:
                failed = False  # the state now is the loaded one
        elif status != status_before:
            r.problems.append(f"status {status_before} -> {status}")
        if status != "running" or saving:
            g.qmp.cmd("cont")
        if loading:
            g.resync()
        try:
            g.next_tick()
        except AssertionError:
            r.problems.append("the guest does not run after the command")
        else:
            got = State.read(g)
            expect = template.snaps["base"] if (loading and not failed) else cur
            if not got.same_contents(expect):
                r.problems.append(f"the guest holds {got}, expected {expect}"
                                  + (" (half-loaded)" if loading else ""))
        f.close()
        g.stop()
    finally:
        g.guest.kill()
    check_images(rundir, r, r.error is not None and not r.stopped, "after the command")
    if any("qemu-img check" in p for p in r.problems):
        return r  # verifying a corrupt image could spread it; report as is
    verify_snapshots(rundir, want if not r.stopped else expected_after(op, template.snaps, cur,
                                                                       False), r)
    check_images(rundir, r, False, "after the verification")
    return r


def crash_run(template, rundir, op, spec):
    """The process dies (action=crash: like a kill -9) at the Nth write or
    flush of `op`.  Afterwards: no corruption; the snapshot list is the old
    one or the new one, never anything else; every snapshot listed loads and
    verifies; a writable open then leaves no leaked cluster (clusters a kill
    leaks are reclaimed)."""
    template.copy_to(rundir)
    env = fault_env(rundir)
    r = Result(op, spec)
    g = Guest(rundir, disks=disks(), mem=MEM, env=env).start()
    try:
        f = FaultCtl(env["SNAPVM_FAULT_CTL"])
        cur = set_state(g, 3)
        if op in ("savevm", "snapshot-save"):
            cur.tick = g.paused_tick()
        f.arm(spec)
        try:
            r.error = run_op(g, op)
        except Exception as e:  # the monitor went away with the process
            r.error = f"killed ({type(e).__name__})"
        try:
            rc = g.guest.proc.wait(timeout=20)
        except Exception:
            rc = None
        r.injected = 1 if rc == 99 else 0
        if rc != 99:
            r.problems.append(f"the process did not die at the fault (status {rc}, "
                              f"command: {r.error})")
    finally:
        g.guest.kill()
    old = expected_after(op, template.snaps, cur, False)
    new = expected_after(op, template.snaps, cur, True)
    for d in disks():
        errors, leaks = qemu_img_check(d.path(rundir))
        r.leaks += leaks
        if not errors:
            continue
        # A kill between a refcount update and the matching COPIED-flag update
        # leaves "ERROR OFLAG_COPIED" (refcount 2 with COPIED set): QEMU's own
        # crashes leave the same, and a writable open repairs it (checked
        # below, with the leaks).  Any other error is corruption.
        p = subprocess.run(["qemu-img", "check", d.path(rundir)], capture_output=True, text=True)
        bad = [ln for ln in (p.stdout + p.stderr).splitlines()
               if ln.startswith("ERROR") and "OFLAG_COPIED" not in ln]
        if bad or not any("OFLAG_COPIED" in ln for ln in (p.stdout + p.stderr).splitlines()):
            r.problems.append(f"after the kill: qemu-img check: {errors} errors in {d.name}: "
                              + "; ".join(bad[:3]))
        else:
            r.copied_flag_errors += errors
    if r.problems:
        return r
    from snapshot_vm import qemu_img_snapshots
    tags = [sorted(qemu_img_snapshots(d.path(rundir))) for d in disks()]
    if tags[0] != tags[1]:
        # A kill between two nodes' commits leaves the op's own snapshot on
        # some nodes only; that is recoverable if delvm then removes it (the
        # user's delete finished, the save undone), and nothing else differs.
        tag = NEW if op in ("savevm", "snapshot-save") else "second"
        if set(tags[0]) ^ set(tags[1]) != {tag} or op in ("loadvm", "snapshot-load"):
            r.problems.append(f"after the kill the disks disagree: d0 has {tags[0]}, "
                              f"d1 {tags[1]}")
            return r
        with Guest(rundir, disks=disks(), mem=MEM, name="cleanup") as g:
            try:
                g.qmp.cmd("delvm", tag=tag)
            except QMPError as e:
                r.problems.append(f"after the kill '{tag}' is on some disks only "
                                  f"(d0 {tags[0]}, d1 {tags[1]}) and delvm cannot remove it: "
                                  f"{e.desc}")
                return r
        r.stopped = True  # counted as "recovered by delvm"
        tags = [sorted(qemu_img_snapshots(d.path(rundir))) for d in disks()]
        old = new = {t: st for t, st in old.items() if t != tag}
    if tags[0] not in (sorted(old), sorted(new)):
        r.problems.append(f"after the kill: snapshots {tags[0]}, expected {sorted(old)} or "
                          f"{sorted(new)}")
        return r
    verify_snapshots(rundir, old if tags[0] == sorted(old) else new, r)
    check_images(rundir, r, True, "after a writable open (leaks reclaimed?)")
    return r


def count_op(template, workdir, op):
    """Host writes and flushes of one fault-free `op`: (writes, flushes)."""
    c = {}
    r = one_run(template, os.path.join(workdir, f"count-{op}"), op, None, c)
    assert r.ok, r
    return c["write"], c["flush"]


def sample(total, every, head=3, tail=3):
    """N to sweep: all of 1..total when every == 1, else the first and last
    few and every `every`-th in between."""
    if every <= 1:
        return list(range(1, total + 1))
    ns = set(range(1, min(head, total) + 1)) | set(range(max(1, total - tail + 1), total + 1))
    ns |= set(range(1, total + 1, every))
    return sorted(ns)


def sweep(op, workdir, template, errnos=("EIO", "ENOSPC"), kinds=("write", "flush"), every=1,
          log=None, only=None, rotate=False, head=3, tail=3):
    """Sweep `op`; returns (results, counts) where counts = {kind: total}.
    rotate: one errno per N, in turn (a short sweep), instead of every errno
    at every N."""
    writes, flushes = count_op(template, workdir, op)
    totals = {"write": writes, "flush": flushes}
    results = []
    i = 0
    for kind in kinds:
        for j, n in enumerate(only if only else sample(totals[kind], every, head, tail)):
            for e in ([errnos[j % len(errnos)]] if rotate else errnos):
                i += 1
                crash = e == "crash"
                spec = f"op={kind},nth={n}," + ("action=crash" if crash else f"errno={e}")
                try:
                    r = (crash_run if crash else one_run)(template,
                                                          os.path.join(workdir, f"{op}-{i}"), op,
                                                          spec)
                except Exception as e:  # a hang or a crash is a finding, not the end
                    r = Result(op, spec)
                    r.injected = -1
                    r.problems.append(f"the run broke: {type(e).__name__}: {e}")
                results.append(r)
                if log and (not r.ok or log.verbose):
                    log.write(f"  {r}\n")
                shutil.rmtree(os.path.join(workdir, f"{op}-{i}"), ignore_errors=True)
    return results, totals


def fault_kind(r):
    return "crash" if "action=crash" in r.spec else r.spec.rsplit("errno=", 1)[-1]


def summary(op, results, totals):
    """One line: the counts, then injected/survived per fault kind."""
    parts = []
    for kind in sorted({fault_kind(r) for r in results}):
        rs = [r for r in results if fault_kind(r) == kind]
        injected = [r for r in rs if r.injected]
        survived = [r for r in injected if r.ok]
        failed = sum(1 for r in injected if r.error is not None)
        stopped = sum(1 for r in injected if r.stopped)
        copied = sum(1 for r in injected if r.copied_flag_errors)
        parts.append(f"{kind} {len(survived)}/{len(injected)} survived"
                     + (f" (command failed {failed}, stopped {stopped})" if kind != "crash" else
                        f" (OFLAG_COPIED repaired on open {copied}, split across nodes and "
                        f"finished by delvm {stopped})")
                     + (f", {len(rs) - len(injected)} not reached" if len(rs) > len(injected)
                        else ""))
    return f"{op}: {totals['write']} writes, {totals['flush']} flushes; " + "; ".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--errnos", default="EIO,ENOSPC",
                    help="comma-separated; 'crash' kills the process at the Nth I/O instead")
    ap.add_argument("--kinds", default="write,flush")
    ap.add_argument("--every", type=int, default=1, help="sweep every K-th N (default: all)")
    ap.add_argument("--n", default="", help="only these N (comma-separated): reproduce one case")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    class Log:
        verbose = args.verbose

        def write(self, s):
            sys.stdout.write(s)
            sys.stdout.flush()

    bad = 0
    with tempfile.TemporaryDirectory(prefix="snapvm-sweep-") as work:
        template = Template(work)
        for op in args.ops.split(","):
            t0 = time.monotonic()
            results, totals = sweep(op, work, template, args.errnos.split(","),
                                    args.kinds.split(","), args.every, Log(),
                                    [int(n) for n in args.n.split(",") if n])
            bad += sum(1 for r in results if not r.ok)
            print(summary(op, results, totals) + f" [{time.monotonic() - t0:.0f}s]", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
