"""QEMU 6.0's snapshot jobs, cancellation, and a monitor that is never held
up by snapshot work."""
import threading
import time

import pytest

from snapshot_vm import Disk, Guest, qemu_img_check, qemu_img_snapshots

pytestmark = pytest.mark.kvm


def statuses(qmp, job_id):
    """The job's status changes, once its "concluded" event has arrived
    (query-jobs may report the job concluded before the event is read)."""
    done = {"id": job_id, "status": "concluded"}
    qmp.events.append(qmp.event("JOB_STATUS_CHANGE", match=done))
    return [e["data"]["status"] for e in qmp.events
            if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job_id]


def test_save_load_delete_jobs(tmp_path):
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "64M")]) as g:
        g.guest.cmd("fill 21 16")
        ram = g.guest.sum()
        assert g.qmp.cmd("snapshot-save", job_id="s", tag="j", vmstate="disk0",
                         devices=["disk0"]) == {}
        job = g.wait_job("s")
        assert job["type"] == "snapshot-save" and "error" not in job
        assert job["current-progress"] == job["total-progress"] >= 16 << 20
        g.qmp.event("STOP")
        g.qmp.event("RESUME")
        assert statuses(g.qmp, "s") == ["created", "running", "waiting", "pending", "concluded"]
        g.qmp.cmd("job-dismiss", id="s")
        assert g.qmp.cmd("query-jobs") == []

        g.guest.cmd("fill 22 16")
        g.qmp.cmd("snapshot-load", job_id="l", tag="j", vmstate="disk0", devices=["disk0"])
        job = g.wait_job("l")
        assert job["type"] == "snapshot-load" and "error" not in job
        g.resync()
        assert g.guest.sum() == ram

        g.qmp.cmd("snapshot-delete", job_id="d", tag="j", devices=["disk0"])
        assert "error" not in g.wait_job("d")
        assert g.qmp.cmd("query-snapshots") == []
        g.qmp.cmd("snapshot-load", job_id="l2", tag="j", vmstate="disk0", devices=["disk0"])
        assert "does not exist" in g.wait_job("l2")["error"]
        assert statuses(g.qmp, "l2")[-2:] == ["aborting", "concluded"]
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)


def test_cancelled_save_leaves_nothing(tmp_path):
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "2G")], mem="1024") as g:
        g.guest.cmd("fill 5 900", timeout=60)
        ram = g.guest.sum()
        g.qmp.cmd("snapshot-save", job_id="c", tag="never", vmstate="disk0", devices=["disk0"])
        g.qmp.cmd("job-cancel", id="c")
        job = g.wait_job("c")
        assert "cancel" in job["error"], job
        assert g.qmp.cmd("query-snapshots") == []
        assert g.qmp.cmd("query-status")["status"] == "running"
        assert g.guest.sum() == ram
    path = str(tmp_path / "disk0.qcow2")
    assert qemu_img_snapshots(path) == {}
    assert qemu_img_check(path) == (0, 0)


def round_trips_during(g, action):
    """Run action() on this thread while a second client times query-status."""
    other = g.connect()
    latencies, done = [], threading.Event()

    def poll():
        while not done.is_set():
            t0 = time.monotonic()
            status = other.cmd("query-status")["status"]
            latencies.append((time.monotonic() - t0, status))
            time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        action()
    finally:
        done.set()
        poller.join()
        other.close()
    return latencies


def test_monitor_answers_during_savevm(tmp_path):
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "2G")], mem="1024") as g:
        g.guest.cmd("fill 6 900", timeout=60)
        lat = round_trips_during(g, lambda: g.qmp.cmd("savevm", tag="busy"))
        # The other client was served while the save ran (the guest keeps
        # running during a live save, so it mostly reads "running"), and
        # never waited anywhere near as long as the save took.
        assert len(lat) >= 3, lat
        assert {status for _, status in lat} <= {"running", "save-vm"}, lat
        assert max(t for t, _ in lat) < 0.5, lat


def test_monitor_answers_during_save_job(tmp_path):
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "2G")], mem="1024") as g:
        g.guest.cmd("fill 7 900", timeout=60)

        def save():
            g.qmp.cmd("snapshot-save", job_id="b", tag="busy", vmstate="disk0",
                      devices=["disk0"])
            g.wait_job("b")

        lat = round_trips_during(g, save)
        assert len(lat) >= 3, lat
        assert max(t for t, _ in lat) < 0.5, lat
