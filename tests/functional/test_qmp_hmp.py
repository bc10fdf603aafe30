"""HMP arguments behind human-monitor-command: parsed as QEMU's monitor
parses them (words, "quoted strings"), and checked whole: a tag is never cut
to fit, and a bad one is refused before anything is done."""
import pytest

from snapshot_vm import Disk, Guest, qemu_img_check

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def g(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hmp")
    with Guest(tmp, disks=[Disk("disk0", "qcow2", "64M")]) as g:
        yield g
    assert qemu_img_check(str(tmp / "disk0.qcow2")) == (0, 0)


def tags(g):
    return sorted(s["tag"] for s in g.qmp.cmd("query-snapshots"))


def test_over_long_tags_are_refused_not_cut(g):
    t255 = "t" * 255
    assert g.qmp.hmp(f"savevm {t255}") == ""
    assert tags(g) == [t255]
    long = t255 + "x" * 45  # its first 255 characters name the snapshot above
    for cmd in ("savevm", "loadvm", "delvm"):
        out = g.qmp.hmp(f"{cmd} {long}")
        assert out == (f"Error: {cmd}: the tag is 300 bytes long; "
                       "a snapshot tag holds at most 255\r\n")
    assert tags(g) == [t255]  # nothing saved over it, nothing deleted
    assert g.qmp.hmp(f"delvm {t255}") == ""
    assert tags(g) == []


@pytest.mark.parametrize("ch", ["\x01", "\x1b", "\x7f", "\t"])
def test_control_characters_in_tags_are_refused(g, ch):
    out = g.qmp.hmp(f'savevm "a{ch}b"')
    assert out == (f"Error: savevm: the tag holds the control character 0x{ord(ch):02x} "
                   "at offset 1\r\n")
    assert tags(g) == []


def test_quoted_tags_and_argument_errors(g):
    assert g.qmp.hmp(r'savevm "two words \"q\""') == ""
    assert tags(g) == ['two words "q"']
    assert g.qmp.hmp("savevm two words") == \
        "Error: savevm: extraneous characters at the end of line\r\n"
    assert g.qmp.hmp('loadvm "open') == "Error: loadvm: unterminated string\r\n"
    assert g.qmp.hmp(r'loadvm "a\q"') == "Error: loadvm: unsupported escape code: '\\q'\r\n"
    assert g.qmp.hmp("loadvm") == "Error: loadvm: string expected\r\n"
    assert g.qmp.hmp("delvm   ") == "Error: delvm: string expected\r\n"
    assert tags(g) == ['two words "q"']
    assert g.qmp.hmp(r'delvm "two words \"q\""') == ""
    assert tags(g) == []
