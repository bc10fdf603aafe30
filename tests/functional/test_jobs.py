"""Background jobs through QMP, driven by real snapshot-save jobs: the JobStatus
life cycle and its JOB_STATUS_CHANGE events, byte progress, errors, cancel,
dismiss, verb errors, and a monitor that answers promptly while a job works.

The guest's RAM comes from a prefilled -mem-path file (no zero pages to skip),
so that a save writes real bytes for a second or so.
"""
import statistics
import subprocess
import time

import pytest

from qmp import QMPError, SnapVM

pytestmark = pytest.mark.kvm
RAM_MB = 384


@pytest.fixture(scope="module")
def mem_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ram") / "ram"
    with open(path, "wb") as f:
        f.write(bytes(range(1, 256)) * ((RAM_MB << 20) // 255) + b"\1" * ((RAM_MB << 20) % 255))
    return path


@pytest.fixture
def vm(tmp_path, mem_file, qemu_img):
    disk = tmp_path / "disk.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    args = ["-m", f"{RAM_MB}M", "-mem-path", str(mem_file),
            "-blockdev", f"driver=qcow2,node-name=disk0,file.driver=file,file.filename={disk}",
            "-device", "virtio-blk-pci,drive=disk0"]
    with SnapVM(extra_args=args) as vm:
        yield vm


def save(q, job_id, tag):
    return q.cmd("snapshot-save", job_id=job_id, tag=tag, vmstate="disk0", devices=["disk0"])


def statuses(q, job_id, until):
    """The job's statuses from JOB_STATUS_CHANGE events, up to `until`."""
    seen = []
    while not seen or seen[-1] != until:
        ev = q.event("JOB_STATUS_CHANGE", timeout=60, match={"id": job_id})
        seen.append(ev["data"]["status"])
    return seen


def test_life_cycle_events_progress_and_dismiss(vm):
    watcher = vm.connect()
    assert save(vm.qmp, "s1", "t1") == {}
    # Every client sees every change, in order; snapshot jobs wait for job-dismiss.
    for q in (vm.qmp, watcher):
        assert statuses(q, "s1", "concluded") == ["created", "running", "waiting", "pending",
                                                  "concluded"]
    [info] = watcher.cmd("query-jobs")
    assert (info["id"], info["type"], info["status"]) == ("s1", "snapshot-save", "concluded")
    assert "error" not in info
    assert info["total-progress"] >= RAM_MB << 20  # bytes: at least the RAM
    assert 0 < info["current-progress"] <= info["total-progress"]
    vm.qmp.cmd("job-dismiss", id="s1")
    assert statuses(watcher, "s1", "null") == ["null"]
    assert vm.qmp.cmd("query-jobs") == []
    with pytest.raises(QMPError) as e:
        vm.qmp.cmd("job-dismiss", id="s1")
    assert e.value.desc == "Job 's1' not found"


def test_verbs_in_the_wrong_state(vm):
    save(vm.qmp, "s1", "t1")
    statuses(vm.qmp, "s1", "concluded")
    for verb in ("cancel", "finalize"):
        with pytest.raises(QMPError) as e:
            vm.qmp.cmd(f"job-{verb}", id="s1")
        assert e.value.desc == f"Job 's1' in state 'concluded' cannot accept command verb '{verb}'"
    # The id stays taken until the job is dismissed.
    with pytest.raises(QMPError) as e:
        save(vm.qmp, "s1", "t2")
    assert e.value.desc == "Job ID 's1' already in use"
    vm.qmp.cmd("job-dismiss", id="s1")
    save(vm.qmp, "s1", "t2")
    statuses(vm.qmp, "s1", "concluded")


def test_failed_job_reports_its_error(vm):
    save(vm.qmp, "s1", "t1")
    statuses(vm.qmp, "s1", "concluded")
    save(vm.qmp, "s2", "t1")  # the tag exists: the job fails
    assert statuses(vm.qmp, "s2", "concluded") == ["created", "running", "aborting",
                                                   "concluded"]
    info = next(j for j in vm.qmp.cmd("query-jobs") if j["id"] == "s2")
    assert "t1" in info["error"] and "already exists" in info["error"]


def test_cancel_a_running_job(vm):
    save(vm.qmp, "s1", "t1")
    assert statuses(vm.qmp, "s1", "running") == ["created", "running"]
    vm.qmp.cmd("job-cancel", id="s1")
    seen = statuses(vm.qmp, "s1", "concluded")
    if seen == ["waiting", "pending", "concluded"]:
        pytest.fail("the save finished before the cancel arrived: make RAM_MB larger")
    assert seen == ["aborting", "concluded"]
    [info] = vm.qmp.cmd("query-jobs")
    assert info["error"]
    assert vm.qmp.cmd("query-snapshots") == []
    assert vm.qmp.cmd("query-status")["status"] == "running"


def test_monitor_answers_promptly_while_a_job_runs(vm):
    other = vm.connect()
    save(vm.qmp, "s1", "t1")
    statuses(vm.qmp, "s1", "running")
    during = []
    while True:
        t = time.perf_counter()
        other.cmd("query-status")
        dt = time.perf_counter() - t
        [job] = other.cmd("query-jobs")
        if job["status"] != "running":
            break
        during.append(dt)
    assert len(during) >= 10, f"only {len(during)} round trips while the job ran"
    assert statistics.median(during) < 0.02
    assert max(during) < 0.5


def test_deferred_savevm_keeps_order_and_holds_up_no_one(vm):
    """savevm answers when done, to its caller only: the caller's next command
    waits behind it, another client is answered meanwhile."""
    other = vm.connect()
    q = vm.qmp
    q.send({"execute": "savevm", "arguments": {"tag": "d1"}, "id": "save"})
    q.send({"execute": "query-status", "id": "after"})
    t = time.perf_counter()
    assert other.cmd("query-status")["running"] in (True, False)
    answered_other = time.perf_counter() - t
    with pytest.raises(TimeoutError):  # the save is still going on
        q.recv(timeout=0.01)
    first = q.recv(timeout=60)
    assert first["id"] == "save" and first["return"]["tag"] == "d1", first
    assert q.recv()["id"] == "after"
    assert answered_other < 0.5
    assert [s["tag"] for s in other.cmd("query-snapshots")] == ["d1"]


def test_client_vanishing_during_savevm(vm):
    gone = vm.connect()
    gone.send({"execute": "savevm", "arguments": {"tag": "v1"}})
    gone.send({"execute": "query-status"})
    gone.close()
    q = vm.qmp
    # The save completes without its client.  Its end is the RESUME event:
    # the snapshot is on the image a moment before that, while the VM is
    # still in save-vm (the commit comes first, then the pause ends), so
    # seeing it in query-snapshots does not mean the save is over.
    q.event("RESUME", timeout=60)
    assert q.cmd("query-snapshots")[0]["tag"] == "v1"
    assert q.cmd("query-status")["status"] == "running"


def test_quit_while_savevm_runs(vm, tmp_path, qemu_img):
    """quit waits for a deferred savevm: its caller gets the answer, the image
    holds the snapshot, snapvm exits cleanly."""
    saver = vm.connect()
    saver.send({"execute": "savevm", "arguments": {"tag": "q1"}, "id": "save"})
    time.sleep(0.05)
    assert vm.qmp.cmd("quit") == {}
    assert vm.proc.wait(timeout=60) == 0
    reply = saver.recv(timeout=5)
    assert reply["id"] == "save" and reply["return"]["tag"] == "q1"
    listing = subprocess.run([qemu_img, "snapshot", "-l", str(tmp_path / "disk.qcow2")],
                             capture_output=True, text=True, check=True).stdout
    assert "q1" in listing
