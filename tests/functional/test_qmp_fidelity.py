"""QMP fidelity, member for member with QEMU 7.2's QAPI documentation: the
schema snapvm serves through query-qmp-schema is compared with QEMU's
definitions of every command and event snapvm offers from QEMU (written out
below from qapi/*.json), and the commands' behaviour where the documentation
prescribes it (query-name, cpu-index, flat, the backing chain).

The rule checked: every member QEMU requires is there, required, with QEMU's
type; every member snapvm has is one of QEMU's, as optional as in QEMU and of
the same type; enums have QEMU's values.  QEMU's optional members snapvm
does not offer are listed (QEMU_ONLY) so that dropping one is a decision."""
import subprocess

import pytest

from qmp import QMPError, SnapVM

pytestmark = pytest.mark.kvm


def enum(*values):
    return ("enum", set(values))


OPAQUE = "opaque"  # a type snapvm does not declare (only behind a QEMU-only member)

TYPES = {
    "QMPCapability": enum("oob"),
    "VersionTriple": {"major": "int", "minor": "int", "micro": "int"},
    "VersionInfo": {"qemu": "VersionTriple", "package": "str"},
    "CommandInfo": {"name": "str"},
    "NameInfo": {"*name": "str"},
    "RunState": enum("debug", "inmigrate", "internal-error", "io-error", "paused", "postmigrate",
                     "prelaunch", "finish-migrate", "restore-vm", "running", "save-vm",
                     "shutdown", "suspended", "watchdog", "guest-panicked", "colo"),
    "StatusInfo": {"running": "bool", "singlestep": "bool", "status": "RunState"},
    "ShutdownCause": enum("none", "host-error", "host-qmp-quit", "host-qmp-system-reset",
                          "host-signal", "host-ui", "guest-shutdown", "guest-reset",
                          "guest-panic", "subsystem-reset", "snapshot-load"),
    "JobType": enum("commit", "stream", "mirror", "backup", "create", "amend", "snapshot-load",
                    "snapshot-save", "snapshot-delete"),
    "JobStatus": enum("undefined", "created", "running", "paused", "ready", "standby", "waiting",
                      "pending", "aborting", "concluded", "null"),
    "JobInfo": {"id": "str", "type": "JobType", "status": "JobStatus",
                "current-progress": "int", "total-progress": "int", "*error": "str"},
    "SnapshotInfo": {"id": "str", "name": "str", "vm-state-size": "int", "date-sec": "int",
                     "date-nsec": "int", "vm-clock-sec": "int", "vm-clock-nsec": "int",
                     "*icount": "int"},
    "ImageInfo": {"filename": "str", "format": "str", "*dirty-flag": "bool",
                  "*actual-size": "int", "virtual-size": "int", "*cluster-size": "int",
                  "*encrypted": "bool", "*compressed": "bool", "*backing-filename": "str",
                  "*full-backing-filename": "str", "*backing-filename-format": "str",
                  "*snapshots": ["SnapshotInfo"], "*backing-image": "ImageInfo",
                  "*format-specific": OPAQUE},
    "BlockdevDetectZeroesOptions": enum("off", "on", "unmap"),
    "BlockdevCacheInfo": {"writeback": "bool", "direct": "bool", "no-flush": "bool"},
    "BlockDeviceInfo": {
        "file": "str", "*node-name": "str", "ro": "bool", "drv": "str", "*backing_file": "str",
        "backing_file_depth": "int", "encrypted": "bool",
        "detect_zeroes": "BlockdevDetectZeroesOptions", "bps": "int", "bps_rd": "int",
        "bps_wr": "int", "iops": "int", "iops_rd": "int", "iops_wr": "int",
        "image": "ImageInfo", "*bps_max": "int", "*bps_rd_max": "int", "*bps_wr_max": "int",
        "*iops_max": "int", "*iops_rd_max": "int", "*iops_wr_max": "int",
        "*bps_max_length": "int", "*bps_rd_max_length": "int", "*bps_wr_max_length": "int",
        "*iops_max_length": "int", "*iops_rd_max_length": "int", "*iops_wr_max_length": "int",
        "*iops_size": "int", "*group": "str", "cache": "BlockdevCacheInfo",
        "write_threshold": "int", "*dirty-bitmaps": [OPAQUE]},
    # qapi/introspect.json
    "SchemaMetaType": enum("builtin", "enum", "array", "object", "alternate", "command", "event"),
    "JSONType": enum("string", "number", "int", "boolean", "null", "object", "array", "value"),
    "SchemaInfo": ("union", {"name": "str", "meta-type": "SchemaMetaType", "*features": ["str"]},
                   "meta-type",
                   {"builtin": "SchemaInfoBuiltin", "enum": "SchemaInfoEnum",
                    "array": "SchemaInfoArray", "object": "SchemaInfoObject",
                    "alternate": "SchemaInfoAlternate", "command": "SchemaInfoCommand",
                    "event": "SchemaInfoEvent"}),
    "SchemaInfoBuiltin": {"json-type": "JSONType"},
    "SchemaInfoEnum": {"members": ["SchemaInfoEnumMember"], "values": ["str"]},
    "SchemaInfoEnumMember": {"name": "str", "*features": ["str"]},
    "SchemaInfoArray": {"element-type": "str"},
    "SchemaInfoObject": {"members": ["SchemaInfoObjectMember"], "*tag": "str",
                         "*variants": ["SchemaInfoObjectVariant"]},
    "SchemaInfoObjectMember": {"name": "str", "type": "str", "*default": "any",
                               "*features": ["str"]},
    "SchemaInfoObjectVariant": {"case": "str", "type": "str"},
    "SchemaInfoAlternate": {"members": ["SchemaInfoAlternateMember"]},
    "SchemaInfoAlternateMember": {"type": "str"},
    "SchemaInfoCommand": {"arg-type": "str", "ret-type": "str", "*allow-oob": "bool"},
    "SchemaInfoEvent": {"arg-type": "str"},
}

NONE = {}
COMMANDS = {  # name: (arguments, return type or None for {})
    "qmp_capabilities": ({"*enable": ["QMPCapability"]}, None),
    "query-version": (NONE, "VersionInfo"),
    "query-name": (NONE, "NameInfo"),
    "query-status": (NONE, "StatusInfo"),
    "query-commands": (NONE, ["CommandInfo"]),
    "query-qmp-schema": (NONE, ["SchemaInfo"]),
    "human-monitor-command": ({"command-line": "str", "*cpu-index": "int"}, "str"),
    "stop": (NONE, None), "cont": (NONE, None), "system_reset": (NONE, None),
    "quit": (NONE, None),
    "query-named-block-nodes": ({"*flat": "bool"}, ["BlockDeviceInfo"]),
    "query-jobs": (NONE, ["JobInfo"]),
    "job-cancel": ({"id": "str"}, None), "job-dismiss": ({"id": "str"}, None),
    "job-finalize": ({"id": "str"}, None),
    "snapshot-save": ({"job-id": "str", "tag": "str", "vmstate": "str", "devices": ["str"]},
                      None),
    "snapshot-load": ({"job-id": "str", "tag": "str", "vmstate": "str", "devices": ["str"]},
                      None),
    "snapshot-delete": ({"job-id": "str", "tag": "str", "devices": ["str"]}, None),
}
EVENTS = {
    "STOP": NONE, "RESUME": NONE,
    "SHUTDOWN": {"guest": "bool", "reason": "ShutdownCause"},
    "RESET": {"guest": "bool", "reason": "ShutdownCause"},
    "JOB_STATUS_CHANGE": {"id": "str", "status": "JobStatus"},
}
SNAPVM_ONLY = {"savevm", "loadvm", "delvm", "query-snapshots"}  # snapvm's own commands
# snapvm's extensions of QEMU's commands, each a superset a QEMU client never
# notices (snapvm-ctl's: the job API with savevm's node selection): members
# QEMU requires that snapvm lets a client omit, and members QEMU lacks.
EXTENSIONS = {
    "snapshot-save (arguments)": ({"vmstate", "devices"}, {"*exclude": ["str"]}),
    "snapshot-load (arguments)": ({"vmstate", "devices"}, {"*exclude": ["str"]}),
    "snapshot-delete (arguments)": ({"devices"}, {"*exclude": ["str"]}),
}
QEMU_ONLY = {  # QEMU's optional members snapvm does not offer
    "ImageInfo": {"dirty-flag", "encrypted", "compressed", "format-specific"},
    "SnapshotInfo": {"icount"},  # record/replay only
    "BlockDeviceInfo": {"bps_max", "bps_rd_max", "bps_wr_max", "iops_max", "iops_rd_max",
                        "iops_wr_max", "bps_max_length", "bps_rd_max_length",
                        "bps_wr_max_length", "iops_max_length", "iops_rd_max_length",
                        "iops_wr_max_length", "iops_size", "group", "dirty-bitmaps"},
}


class Compare:
    def __init__(self, schema):
        self.by_name = {e["name"]: e for e in schema}
        self.done = set()
        self.unused_optional = {}

    def type(self, where, ours, theirs):
        """`ours`: an introspection type name; `theirs`: an expectation."""
        info = self.by_name[ours]
        if isinstance(theirs, list):
            assert info["meta-type"] == "array", (where, info)
            return self.type(f"{where}[]", info["element-type"], theirs[0])
        if theirs in ("str", "int", "bool", "number", "any", "null"):
            assert ours == theirs, (where, ours, theirs)
            return
        key = (ours, theirs)
        if key in self.done:
            return
        self.done.add(key)
        spec = TYPES[theirs]
        if isinstance(spec, tuple) and spec[0] == "enum":
            assert info["meta-type"] == "enum", (where, info)
            assert set(info["values"]) == spec[1], (theirs, set(info["values"]) ^ spec[1])
            assert [m["name"] for m in info["members"]] == info["values"]
        elif isinstance(spec, tuple) and spec[0] == "union":
            _, base, tag, variants = spec
            assert info["meta-type"] == "object" and info["tag"] == tag, (where, info)
            self.members(theirs, info["members"], base)
            cases = {v["case"]: v["type"] for v in info["variants"]}
            assert set(cases) == set(variants), (theirs, cases)
            for case, t in variants.items():
                self.type(f"{where}<{case}>", cases[case], t)
        else:
            assert info["meta-type"] == "object" and "tag" not in info, (where, info)
            self.members(theirs, info["members"], spec)

    def members(self, owner, ours, theirs):
        mine = {m["name"]: m for m in ours}
        relaxed, added = EXTENSIONS.get(owner, (set(), {}))
        theirs = {("*" + k if k in relaxed else k): t for k, t in theirs.items()}
        theirs.update(added)
        for key, t in theirs.items():
            optional = key.startswith("*")
            name = key.lstrip("*")
            if name not in mine:
                assert optional, f"{owner}: QEMU requires '{name}'"
                self.unused_optional.setdefault(owner, set()).add(name)
                continue
            m = mine.pop(name)
            assert ("default" in m) == optional, f"{owner}.{name}: optional in one only"
            self.type(f"{owner}.{name}", m["type"], t)
        assert not mine, f"{owner}: members QEMU does not have: {sorted(mine)}"


@pytest.fixture(scope="module")
def schema():
    with SnapVM(extra_args=["-S"]) as vm:
        yield vm.qmp.cmd("query-qmp-schema")


def test_every_command_and_event_member_for_member(schema):
    cmp = Compare(schema)
    names = {e["name"] for e in schema if e["meta-type"] in ("command", "event")}
    assert names == set(COMMANDS) | set(EVENTS) | SNAPVM_ONLY
    for name, (args, ret) in COMMANDS.items():
        info = cmp.by_name[name]
        assert info["meta-type"] == "command"
        cmp.members(f"{name} (arguments)", cmp.by_name[info["arg-type"]]["members"], args)
        if ret is None:
            assert cmp.by_name[info["ret-type"]] == {"name": info["ret-type"],
                                                    "meta-type": "object", "members": []}
        else:
            cmp.type(f"{name} (return)", info["ret-type"], ret)
    for name, data in EVENTS.items():
        info = cmp.by_name[name]
        assert info["meta-type"] == "event"
        cmp.members(name, cmp.by_name[info["arg-type"]]["members"], data)
    assert cmp.unused_optional == QEMU_ONLY


def test_schema_names_are_masked_and_unique(schema):
    names = [e["name"] for e in schema]
    assert len(names) == len(set(names))
    for e in schema:
        if e["meta-type"] in ("object", "enum", "alternate"):
            assert e["name"].isdigit(), e  # as QEMU: type names are not part of the ABI


def test_query_version_and_name(tmp_path):
    with SnapVM(extra_args=["-S", "-name", "guest-7"]) as vm:
        assert vm.qmp.cmd("query-name") == {"name": "guest-7"}
        v = vm.qmp.cmd("query-version")
        assert set(v) == {"qemu", "package"} and set(v["qemu"]) == {"major", "minor", "micro"}
        assert v == vm.qmp.greeting["QMP"]["version"]
        assert v["package"].startswith("snapvm-")
    with SnapVM(extra_args=["-S"]) as vm:
        assert vm.qmp.cmd("query-name") == {}  # no -name: no member, as QEMU


def test_cpu_index_must_name_a_vcpu():
    with SnapVM(extra_args=["-S", "-smp", "2"]) as vm:
        for good in (0, 1):
            assert vm.qmp.hmp("info status") == vm.qmp.cmd(
                "human-monitor-command", command_line="info status", cpu_index=good)
        for bad in (2, 99, -1):
            with pytest.raises(QMPError) as e:
                vm.qmp.cmd("human-monitor-command", command_line="info status", cpu_index=bad)
            assert (e.value.cls, e.value.desc) == (
                "GenericError", "Parameter 'cpu-index' expects a CPU number")


def test_block_device_info_with_a_backing_chain(tmp_path, qemu_img):
    base, mid, top = (tmp_path / f"{n}.qcow2" for n in ("base", "mid", "top"))
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    for img, back in ((mid, base), (top, mid)):
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(back), "-F", "qcow2",
                        str(img)], check=True)
    args = ["-S", "-blockdev", f"driver=qcow2,node-name=disk0,file.driver=file,"
                               f"file.filename={top},file.node-name=proto0",
            "-blockdev", f"driver=qcow2,node-name=scratch,cache.no-flush=on,file.driver=file,"
                         f"file.filename={base},read-only=on"]
    with SnapVM(extra_args=args) as vm:
        listed = vm.qmp.cmd("query-named-block-nodes")
        nodes = {n["node-name"]: n for n in listed}
        flat = {n["node-name"]: n for n in vm.qmp.cmd("query-named-block-nodes", flat=True)}
    # The nodes opened for the backing chain are listed too, as QEMU lists
    # them: each image and its file node, under unique "#blockN" names.
    assert len(nodes) == len(listed)
    top_at = [n["node-name"] for n in listed].index("disk0")
    chain = listed[top_at + 1:top_at + 5]  # right after the image whose chain it is
    assert all(n["node-name"].startswith("#block") and n["ro"] for n in chain)
    assert [(n["drv"], n["file"], n["backing_file_depth"]) for n in chain] == [
        ("qcow2", str(mid), 1), ("file", str(mid), 0), ("qcow2", str(base), 0),
        ("file", str(base), 0)]
    assert chain[0]["backing_file"] == str(base)
    d = nodes["disk0"]
    assert d["backing_file_depth"] == 2 and d["backing_file"] == str(mid)
    assert (d["detect_zeroes"], d["write_threshold"]) == ("off", 0)
    assert all(d[k] == 0 for k in ("bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"))
    assert d["cache"] == {"writeback": True, "direct": False, "no-flush": False}
    img = d["image"]
    assert img["cluster-size"] == 65536 and img["actual-size"] > 0
    assert img["backing-filename"] == str(mid) and img["backing-filename-format"] == "qcow2"
    assert img["backing-image"]["filename"] == str(mid)
    assert img["backing-image"]["backing-image"]["filename"] == str(base)
    assert "backing-image" not in img["backing-image"]["backing-image"]
    assert "backing-image" not in flat["disk0"]["image"]  # flat: no nested chain, as QEMU
    # QEMU 7.2 counts the depth as it nests the chain (checked against it): flat, 0.
    assert flat["disk0"]["backing_file_depth"] == 0
    p = nodes["proto0"]
    assert (p["drv"], p["backing_file_depth"], p["image"]["format"]) == ("file", 0, "file")
    assert "backing_file" not in p
    s = nodes["scratch"]
    assert s["ro"] is True and s["cache"]["no-flush"] is True and s["backing_file_depth"] == 0
