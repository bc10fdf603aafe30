"""Every error path of the QMP monitor: each gets a clear error, and the
connection stays usable afterwards."""
import json

import pytest

from qmp import QMPError, SnapVM

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def vm():
    with SnapVM(extra_args=["-S"]) as vm:
        yield vm


@pytest.fixture
def q(vm):
    with vm.connect() as q:
        yield q
        # whatever happened, the connection still works
        assert q.cmd("query-status")["status"] == "prelaunch"


def raw_error(q, data):
    q.send_raw(data)
    reply = q.recv()
    assert "return" not in reply, reply
    return reply


@pytest.mark.parametrize("data", [b'{"execute": }', b'{"execute" "x"}', b'{"a": tru}',
                                  b'{"execute": "query-status",}', b"]", b'{"a": "\\x"}'])
def test_invalid_json(q, data):
    reply = raw_error(q, data + b"\n")
    assert reply["error"]["class"] == "GenericError"
    assert reply["error"]["desc"].startswith("JSON parse error, ")
    assert "id" not in reply


@pytest.mark.parametrize("data", [b"[]", b"[1, 2]", b"42", b'"query-status"', b"null ",
                                  b"true "])
def test_non_object(q, data):
    reply = raw_error(q, data + b"\n")
    assert reply["error"] == {"class": "GenericError", "desc": "QMP input must be a JSON object"}


@pytest.mark.parametrize("msg,desc", [
    ({"id": 1}, "QMP input lacks member 'execute'"),
    ({"execute": 5, "id": 1}, "QMP input member 'execute' must be a string"),
    ({"execute": None, "id": 1}, "QMP input member 'execute' must be a string"),
    ({"execute": "query-status", "arguments": [], "id": 1},
     "QMP input member 'arguments' must be an object"),
    ({"execute": "query-status", "arguments": "x", "id": 1},
     "QMP input member 'arguments' must be an object"),
    ({"execute": "query-status", "argument": {}, "id": 1},
     "QMP input member 'argument' is unexpected"),
])
def test_bad_envelope(q, msg, desc):
    reply = raw_error(q, json.dumps(msg).encode())
    assert reply["error"] == {"class": "GenericError", "desc": desc}
    assert reply["id"] == 1


def test_exec_oob_refused(q):
    reply = raw_error(q, b'{"exec-oob": "query-status", "id": "o"}')
    assert "oob" in reply["error"]["desc"] and reply["id"] == "o"


def test_unknown_command(q):
    with pytest.raises(QMPError) as e:
        q.cmd("savevm-everything")
    assert e.value.cls == "CommandNotFound"
    assert e.value.desc == "The command savevm-everything has not been found"


@pytest.mark.parametrize("args,desc", [
    ({}, "Parameter 'id' is missing"),
    ({"id": None}, "Invalid parameter type for 'id', expected: string"),
    ({"id": 3}, "Invalid parameter type for 'id', expected: string"),
    ({"id": ["j"]}, "Invalid parameter type for 'id', expected: string"),
    ({"id": "j", "force": True}, "Parameter 'force' is unexpected"),
])
def test_argument_errors(q, args, desc):
    with pytest.raises(QMPError) as e:
        q.cmd("job-cancel", args)
    assert (e.value.cls, e.value.desc) == ("GenericError", desc)


def test_arguments_to_command_without_any(q):
    with pytest.raises(QMPError) as e:
        q.cmd("query-status", verbose=True)
    assert e.value.desc == "Parameter 'verbose' is unexpected"


def test_typed_arguments(q):
    with pytest.raises(QMPError) as e:
        q.cmd("human-monitor-command", command_line="info status", cpu_index="0")
    assert e.value.desc == "Invalid parameter type for 'cpu-index', expected: integer"
    with pytest.raises(QMPError) as e:
        q.cmd("query-named-block-nodes", flat="yes")
    assert e.value.desc == "Invalid parameter type for 'flat', expected: boolean"


def test_oversized_message(q):
    big = b'{"execute": "query-status", "arguments": {"x": "' + b"a" * (2 << 20) + b'"}}'
    q.send_raw(big + b'{"execute": "query-version", "id": "after"}')
    reply = q.recv()
    assert reply["error"]["class"] == "GenericError"
    assert "size limit" in reply["error"]["desc"]
    assert q.recv()["id"] == "after"


def test_deep_nesting(q):
    reply = raw_error(q, b"[" * 5000 + b"]" * 5000)
    assert "nesting" in reply["error"]["desc"]


def test_control_character_resets_parser(q):
    q.send_raw(b'{"execute": "query-status", "arguments": {"x": [')
    reply = raw_error(q, b"\x01")
    assert reply["error"]["desc"].startswith("JSON parse error")
    q.send({"execute": "query-status", "id": "fresh"})
    assert q.recv()["id"] == "fresh"


@pytest.mark.parametrize("bad", [b"\x00", b"\x01", b"\x1f", b"\xfe", b"\xff", b"\n"])
def test_bad_byte_in_a_string_resyncs(q, bad):
    """As QEMU's lexer: an error for the bad byte, each stray closer left on
    the line is an error of its own, and the next command is answered."""
    q.send_raw(b'{"execute": "query-status", "arguments": {"x": "a' + bad + b'b"}}\r\n')
    q.send({"execute": "query-version", "id": "next"})
    first = q.recv()
    assert first["error"]["desc"].startswith("JSON parse error, stray byte 0x%02x" % bad[0])
    errors = 1
    while True:
        reply = q.recv()
        if reply.get("id") == "next":
            assert "qemu" in reply["return"]
            break
        assert reply["error"]["desc"].startswith("JSON parse error"), reply
        assert "id" not in reply
        errors += 1
    assert errors == 3  # the bad byte, then '}' and '}'


def test_bad_byte_outside_strings_resyncs(q):
    q.send_raw(b'{"execute": \x02 "query-status"}\n{"execute": "query-status", "id": 1}\n')
    assert q.recv()["error"]["desc"] == "JSON parse error, stray byte 0x02"
    assert q.recv()["error"]["desc"].startswith("JSON parse error")  # the stray '}'
    assert q.recv()["id"] == 1


def test_job_errors(q):
    with pytest.raises(QMPError) as e:
        q.cmd("job-cancel", id="nope")
    assert e.value.desc == "Job 'nope' not found"
    for verb in ("job-dismiss", "job-finalize"):
        with pytest.raises(QMPError):
            q.cmd(verb, id="nope")
    assert q.cmd("query-jobs") == []


def test_random_chunking_of_a_mixed_stream(q):
    """Valid and broken messages, cut at random places: one reply per message, in order."""
    import random
    rng = random.Random(1234)
    kinds = [
        (lambda i: json.dumps({"execute": "query-status", "id": i}), "ok"),
        (lambda i: json.dumps({"execute": "bogus", "id": i}), "CommandNotFound"),
        (lambda i: json.dumps({"execute": "job-cancel", "arguments": {"id": i}, "id": i}),
         "GenericError"),
        (lambda i: '{"execute": "query-status", "id": %d,}' % i, "parse"),
        (lambda i: "[%d]" % i, "object"),
        (lambda i: json.dumps({"execute": "query-status", "id": {"s": "}{][\"" * 3, "n": i}}),
         "ok"),
    ]
    plan = [rng.choice(kinds) for _ in range(300)]
    stream = "\n".join(make(i) for i, (make, _) in enumerate(plan)).encode() + b"\n"
    pos = 0
    while pos < len(stream):
        n = rng.randint(1, 200)
        q.send_raw(stream[pos:pos + n])
        pos += n
    for i, (_, want) in enumerate(plan):
        reply = q.recv()
        if want == "ok":
            assert "return" in reply and reply["id"] in (i, {"s": "}{][\"" * 3, "n": i})
        elif want == "parse":
            assert reply["error"]["desc"].startswith("JSON parse error") and "id" not in reply
        elif want == "object":
            assert reply["error"]["desc"] == "QMP input must be a JSON object"
        else:
            assert reply["error"]["class"] == want and reply["id"] == i
