"""query-named-block-nodes over real qcow2 and raw images (made by qemu-img)."""
import subprocess
import time

import pytest

from qmp import SnapVM

pytestmark = pytest.mark.kvm


def test_query_named_block_nodes(tmp_path, qemu_img):
    disk = tmp_path / "disk.qcow2"
    var = tmp_path / "vars.raw"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    subprocess.run([qemu_img, "snapshot", "-c", "before", str(disk)], check=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(var), "1M"], check=True)
    args = ["-S",
            "-blockdev", f"driver=qcow2,node-name=disk0,file.driver=file,"
                         f"file.filename={disk}",
            "-blockdev", f'{{"driver": "raw", "node-name": "vars", "read-only": true, '
                         f'"file": {{"driver": "file", "filename": "{var}"}}}}',
            "-device", "virtio-blk-pci,drive=disk0"]
    with SnapVM(extra_args=args) as vm:
        nodes = {n["node-name"]: n for n in vm.qmp.cmd("query-named-block-nodes")}
    d = nodes["disk0"]
    assert (d["drv"], d["ro"], d["file"]) == ("qcow2", False, str(disk))
    assert d["image"]["format"] == "qcow2" and d["image"]["virtual-size"] == 64 << 20
    assert d["image"]["filename"] == str(disk)
    [snap] = d["image"]["snapshots"]
    assert snap["name"] == "before" and snap["vm-state-size"] == 0
    assert abs(snap["date-sec"] - time.time()) < 600
    v = nodes["vars"]
    assert (v["drv"], v["ro"]) == ("raw", True)
    assert v["image"]["virtual-size"] == 1 << 20 and "snapshots" not in v["image"]
    files = [n for n in nodes.values() if n["drv"] == "file"]
    assert len(files) == 2 and all("snapshots" not in n["image"] for n in files)
