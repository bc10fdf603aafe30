"""qapi-gen.py, the one checker of the QMP schema language and the generator
of the typed handler interface: each rule refuses a bad schema with a message
naming the culprit, and the generated C makes a misspelled argument a compile
error and a missing handler a link error."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GEN = os.path.join(ROOT, "src", "monitor", "qapi-gen.py")


def gen(tmp_path, text, *extra):
    src = tmp_path / "s.json"
    src.write_text(text)
    return subprocess.run([sys.executable, GEN, "--json", str(tmp_path / "s.c"), *extra,
                           str(src)], capture_output=True, text=True)


@pytest.mark.parametrize("text,words", [
    ('{"command": "a"} {"event": "a"}', "'a' is already defined (one namespace"),
    ('{"enum": "E", "data": ["x"]} {"struct": "E", "data": {}}', "'E' is already defined"),
    ('{"command": "a", "data": {"x": "Nope"}}', "unknown type 'Nope'"),
    ('{"command": "a", "returns": "str", "bogus": 1}', "unknown keys ['bogus']"),
    ('{"struct": "S", "data": {"x": "int"}, "returns": "int"}', "unknown keys ['returns']"),
    ('{"command": "a", "data": {"x": ["int", "str"]}}', "one element type"),
    ('{"command": "a", "data": {"x": [["int"]]}}', "one element type"),
    ('{"enum": "E", "data": ["x", "x"]}', "listed twice"),
    ('{"struct": "S", "base": "S", "data": {}}', "contains itself"),
    ('{"struct": "B", "data": {"x": "int"}} {"struct": "S", "base": "B", "data": {"x": "str"}}',
     "clashes with the base"),
    ('{"enum": "K", "data": ["a"]} {"struct": "A", "data": {}}'
     '{"union": "U", "base": {"*k": "K"}, "discriminator": "k", "data": {"a": "A"}}',
     "must be a required enum member"),
    ('{"enum": "K", "data": ["a"]} {"struct": "A", "data": {}}'
     '{"union": "U", "base": {"k": "K"}, "discriminator": "k", "data": {"b": "A"}}',
     "'b' is not a value of 'K'"),
    ('{"enum": "K", "data": ["a"]}'
     '{"union": "U", "base": {"k": "K"}, "discriminator": "k", "data": {"a": "int"}}',
     "branch 'a' must be a struct"),
    ('{"alternate": "A", "data": {"i": "int", "n": "number"}}', "the same JSON type"),
    ('{"enum": "E", "data": ["x"]} {"alternate": "A", "data": {"s": "str", "e": "E"}}',
     "the same JSON type"),
    ('{"alternate": "A", "data": {"s": "str", "v": "any"}}', "cannot be 'any'"),
    ('{"command": "a", "data": {"x-y": "int", "x_y": "str"}}', "clashes with another"),
    ('{"command": "a"} [1]', "a definition must be an object"),
    ('{"command": "a" "data": {}}', "invalid JSON"),
])
def test_bad_schemas_fail_the_build(tmp_path, text, words):
    r = gen(tmp_path, text)
    assert r.returncode != 0 and words in r.stderr, r.stderr


SCHEMA = '{"command": "x-add", "data": {"left": "int", "*right": "int", "tag": "str"}, ' \
         '"returns": "int"}'
GOOD = """
#include "monitor/qapi-commands.h"
json_t *qmp_x_add(struct qmp_request *req, const struct qapi_args_x_add *args,
                  struct error **errp)
{
    (void)req, (void)errp;
    return json_integer(args->left + (args->has_right ? args->right : 0) + (args->tag != 0));
}
int main(void) { return qapi_commands[0].handler == 0; }
"""


def compile_with(tmp_path, handler_c):
    out = tmp_path / "inc" / "monitor"
    out.mkdir(parents=True, exist_ok=True)
    r = gen(tmp_path, SCHEMA, "--commands-c", str(tmp_path / "cmds.c"), "--commands-h",
            str(out / "qapi-commands.h"))
    assert r.returncode == 0, r.stderr
    (tmp_path / "handler.c").write_text(handler_c)
    # Only qapi-commands.c and the handler: qmp.h's request API is declared, not needed.
    return subprocess.run(["cc", "-std=gnu11", "-Wall", "-Werror", "-I", str(tmp_path / "inc"),
                           "-I", os.path.join(ROOT, "src"), str(tmp_path / "cmds.c"),
                           str(tmp_path / "handler.c"), "-ljansson", "-o",
                           str(tmp_path / "a.out")], capture_output=True, text=True)


def test_generated_interface_compiles_and_runs(tmp_path):
    r = compile_with(tmp_path, GOOD)
    assert r.returncode == 0, r.stderr
    assert subprocess.run([str(tmp_path / "a.out")]).returncode == 0


def test_misspelled_argument_does_not_compile(tmp_path):
    r = compile_with(tmp_path, GOOD.replace("args->left", "args->lefft"))
    assert r.returncode != 0 and "lefft" in r.stderr


def test_missing_handler_does_not_link(tmp_path):
    r = compile_with(tmp_path, GOOD.replace("qmp_x_add(", "qmp_x_add_typo("))
    assert r.returncode != 0 and "qmp_x_add" in r.stderr
