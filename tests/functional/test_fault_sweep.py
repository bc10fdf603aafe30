"""The whole-VM fault sweep (tests/functional/fault_sweep.py), short form for
CI: for each snapshot operation (savevm, loadvm, delvm and the three jobs) on
two qcow2 disks, a fault at the first two and last four writes and flushes
and at every 25th in between; after each, no corruption, no trace of a failed
command (or the documented stopped state), every snapshot loads and
verifies (RAM checksum, sectors, tick), the guest runs.

Fault kinds, taking turns from one N to the next: EIO, ENOSPC, and a kill
of the process at that I/O ("crash").  SNAPVM_SWEEP=full runs every N with
every kind (minutes per operation); the script prints the figures per
operation:  /usr/bin/python3 tests/functional/fault_sweep.py
"""
import os

import pytest

import fault_sweep

pytestmark = pytest.mark.kvm

FULL = os.environ.get("SNAPVM_SWEEP") == "full"
KINDS = ("EIO", "ENOSPC", "crash")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return fault_sweep.Template(str(tmp_path_factory.mktemp("sweep-template")))


@pytest.mark.parametrize("op", fault_sweep.OPS)
def test_fault_sweep(op, template, tmp_path):
    if FULL:
        results, totals = fault_sweep.sweep(op, str(tmp_path), template, errnos=KINDS)
    else:
        results, totals = fault_sweep.sweep(op, str(tmp_path), template, errnos=KINDS,
                                            every=25, head=2, tail=4, rotate=True)
    print(fault_sweep.summary(op, results, totals))
    assert totals["write"] > 0 and totals["flush"] > 0, totals
    unreached = [r for r in results if not r.injected]
    assert not unreached, f"faults that never fired: {unreached}"
    bad = [r for r in results if not r.ok]
    assert not bad, (f"{len(bad)} of {len(results)} faults not survived:\n"
                     + "\n".join(map(repr, bad)))
