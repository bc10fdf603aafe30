"""Live save: the guest keeps running while its RAM is written, and the
snapshot is still the state of one instant -- checked on RAM content that a
guest is rewriting as fast as it can during the save."""
import mmap
import os
import re
import struct
import subprocess
import time

import pytest

from snapshot_vm import Disk, Guest, qemu_img_check
from conftest import BUILD
from vm import DATA_START

pytestmark = pytest.mark.kvm

PAGE = 4096


TORN = "torn"


def page_generations(ram, data_bytes):
    """The guest's `dirty` loop writes word i of the page at data offset pos
    as gen ^ (pos + 8 i).  Return each page's gen: None if never written,
    TORN if its first words carry a newer gen than the rest (the page being
    written at the instant)."""
    gens = []
    for pos in range(0, data_bytes - PAGE + 1, PAGE):
        words = struct.unpack_from("<512Q", ram, DATA_START + pos)
        if not any(words):
            gens.append(None)
            continue
        page_gens = [w ^ (pos + 8 * i) for i, w in enumerate(words)]
        first, last = page_gens[0], page_gens[-1]
        cut = next((i for i, g in enumerate(page_gens) if g != first), 512)
        if cut == 512:
            gens.append(first)
            continue
        assert first == last + 1 and all(g == last for g in page_gens[cut:]), \
            f"page at data offset {pos:#x} holds a mix of generations"
        gens.append(TORN)
    return gens


def guest_symbol(name):
    """Guest-physical address of a variable of the built-in guest (its image
    is linked where it runs, and RAM is identity-mapped)."""
    out = subprocess.run(["nm", os.path.join(BUILD, "guest", "guest.elf")], capture_output=True,
                         text=True, check=True).stdout
    for line in out.splitlines():
        addr, _, sym = line.split()
        if sym == name:
            return int(addr, 16)
    raise AssertionError(f"guest symbol {name} not found")


# The loop keeps its position in a register for up to one batch of pages.
BATCH_PAGES = 64


def assert_one_instant(ram, gens):
    """At any instant the loop is at page k of pass G: pages before k carry
    G, pages from k on carry G - 1 (or nothing yet, in pass 0).  The loop's
    own variables, restored with RAM, say where k was; a page written after
    the instant, or one whose rewrite was missed, breaks the pattern."""
    gen_mem, = struct.unpack_from("<Q", ram, guest_symbol("dirty_gen"))
    pos_mem, = struct.unpack_from("<Q", ram, guest_symbol("dirty_pos"))
    top = max(g for g in gens if g not in (None, TORN))
    k = 0
    while k < len(gens) and gens[k] == top:
        k += 1
    older = {top - 1} if top > 0 else {None}
    rest = gens[k + 1:] if k < len(gens) and gens[k] == TORN else gens[k:]
    assert set(rest) <= older, f"pass {top} ends at page {k}, then {set(rest)}"
    if top == gen_mem:
        assert pos_mem // PAGE <= k <= pos_mem // PAGE + BATCH_PAGES, (k, pos_mem // PAGE)
    else:  # the batch in flight wrapped around to a new pass
        assert top == gen_mem + 1 and k <= BATCH_PAGES, (top, gen_mem, k)


def assert_ram_file_one_instant(ram_file):
    """The -mem-path RAM file of a stopped VM holds RAM of one instant of
    the guest's `dirty` loop (which has written most of the data region)."""
    with open(ram_file, "rb") as f:
        ram = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        try:
            data_bytes = os.path.getsize(ram_file) - DATA_START
            gens = page_generations(ram, data_bytes - (data_bytes % PAGE))
            assert len([x for x in gens if x is not None]) > len(gens) // 2
            assert_one_instant(ram, gens)
        finally:
            ram.close()


def test_live_save_is_one_instant(tmp_path):
    ram_file = str(tmp_path / "ram")
    mem = 256
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "512M")], mem=str(mem),
               extra=["-mem-path", ram_file, "-append", "tick_ms=10"]) as g:
        assert g.guest.cmd("dirty 4000") == "ok"
        time.sleep(2)  # every page of the data region has been written at least once
        g.guest.drain()
        before = len(g.guest.lines)
        g.qmp.cmd("savevm", tag="live")
        g.guest.drain()
        ticks_during = [l for l in g.guest.lines[before:] if l.startswith("tick ")]
        assert len(ticks_during) >= 2, "the guest did not run during the save"

        g.qmp.cmd("stop")
        g.qmp.cmd("loadvm", tag="live")  # the VM stays stopped: RAM is the snapshot's
        assert_ram_file_one_instant(ram_file)
        # Carry on from the loaded state: the loop resumes from its registers
        # (the instant of the pause).  Had RAM been older than the vCPU state,
        # the pages in between would stay behind as a hole of older pages.
        g.qmp.cmd("cont")
        time.sleep(0.05)
        g.qmp.cmd("stop")
        assert_ram_file_one_instant(ram_file)
        g.qmp.cmd("cont")
        g.resync()
        assert g.guest.cmd("dirty 0") == "ok"
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)


@pytest.mark.parametrize("api", ["savevm", "job"])
def test_stop_during_a_live_save_is_honoured(tmp_path, api):
    """stop while a live save runs (pre-copy or final pass): the save
    completes, the VM ends paused, and the last run-state event is STOP."""
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "2G")], mem="512") as g:
        g.guest.cmd("fill 5 400", timeout=60)
        g.qmp.clear_events()
        if api == "job":
            g.qmp.cmd("snapshot-save", job_id="s", tag="a", vmstate="disk0", devices=["disk0"])
        else:
            g.qmp.send({"execute": "savevm", "arguments": {"tag": "a"}, "id": "save"})
        other = g.connect()
        time.sleep(0.05)
        assert other.cmd("stop") == {}
        if api == "job":
            assert "error" not in g.wait_job("s")
        else:
            reply = g.qmp.recv(timeout=60)
            assert reply["id"] == "save" and "return" in reply, reply
        status = g.qmp.cmd("query-status")
        assert status == {"running": False, "singlestep": False, "status": "paused"}
        events = [e["event"] for e in g.qmp.events if e["event"] in ("STOP", "RESUME")]
        assert events and events[-1] == "STOP", events
        assert [s["tag"] for s in g.qmp.cmd("query-snapshots")] == ["a"]
        g.qmp.cmd("cont")
        g.next_tick()
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)


def test_save_of_a_sparse_tmpfs_ram_file_allocates_none_of_its_holes():
    """-mem-path on tmpfs with most of RAM never touched: the file is sparse.
    A save must not read the holes through the shared mapping (on tmpfs that
    allocates every page it reads: the RAM file would grow to the full RAM
    size), and what it saves loads back exactly, also after the guest wrote
    into former holes."""
    import tempfile
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="snapvm-test-") as shm:
        ram_file = os.path.join(shm, "ram")
        with Guest(shm, disks=[Disk("disk0", "qcow2", "64M")], mem="256",
                   extra=["-mem-path", ram_file]) as g:
            g.guest.cmd("fill 1 8")
            before = os.stat(ram_file).st_blocks * 512
            g.qmp.cmd("savevm", tag="a")
            grown = os.stat(ram_file).st_blocks * 512 - before
            assert grown < (4 << 20), f"the save allocated {grown} bytes of the RAM file"
            saved = g.guest.sum()  # (reading all of RAM, the guest allocates it)
            g.guest.cmd("fill 2 32")  # data where the file had holes
            assert g.guest.sum() != saved
            g.qmp.cmd("savevm", tag="b")
            b = g.guest.sum()
            g.qmp.cmd("loadvm", tag="a")
            g.resync()
            assert g.guest.sum() == saved
            g.qmp.cmd("loadvm", tag="b")
            g.resync()
            assert g.guest.sum() == b
        assert qemu_img_check(os.path.join(shm, "disk0.qcow2")) == (0, 0)


def test_save_passes_over_never_touched_ram_unread(tmp_path):
    """Private RAM the guest never touched is known zero from the pagemap:
    a save does not read it (the debug log counts it), and every snapshot
    still loads exactly, also once the guest wrote into such pages.  (The
    guest's own sum reads all of RAM, after which nothing is untouched: the
    first sum comes after the first save.)"""
    env = {**os.environ, "SNAPVM_DEBUG": "1"}
    mem = 512
    with Guest(tmp_path, disks=[Disk("disk0", "qcow2", "64M")], mem=str(mem), env=env) as g:
        g.guest.cmd("fill 1 8")
        g.qmp.cmd("savevm", tag="a")
        a = g.guest.sum()  # (after: reading RAM maps the zero page into it)
        unread = [int(n) for n in re.findall(r"(\d+) pages known zero, not read",
                                             g.guest.stderr())]
        assert unread and unread[0] * 4096 > (mem - 64) << 20, unread
        g.guest.cmd("fill 2 64")  # into pages the first save passed over
        b = g.guest.sum()
        g.qmp.cmd("savevm", tag="b")  # incremental
        g.qmp.cmd("delvm", tag="b")  # the base goes: the next save is a full one
        g.qmp.cmd("savevm", tag="c")
        g.guest.cmd("fill 3 16")
        for tag, want in (("a", a), ("c", b)):
            g.qmp.cmd("loadvm", tag=tag)
            g.resync()
            assert g.guest.sum() == want
    assert qemu_img_check(str(tmp_path / "disk0.qcow2")) == (0, 0)
