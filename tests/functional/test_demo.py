"""The README's first command runs scripts/demo.py: it must keep working and
keep telling the truth (it exits non-zero unless RAM, disk and tick came back
and qemu-img check found the image clean)."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.kvm
def test_demo_snapshot_round_trip(snapvm_bin):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "demo.py")],
                       capture_output=True, text=True, timeout=180)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "demo: it worked: RAM, disk and the tick count came back from the snapshot" in out, out
    assert "No errors were found on the image." in out, out
