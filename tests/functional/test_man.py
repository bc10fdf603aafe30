"""The man pages snapvm(1) and snapvm-ctl(1): built and installed by Meson,
rendered by groff and man without a warning, and complete: every command and
option the programs' own help lists is documented."""
import json
import os
import re
import subprocess

import pytest

from conftest import BUILD, ROOT

PAGES = ["snapvm.1", "snapvm-ctl.1"]


def render(page, width=200):
    env = dict(os.environ, MANWIDTH=str(width))
    env.pop("MAN_KEEP_FORMATTING", None)  # plain text, no overstrike
    r = subprocess.run(["man", "--warnings", "-l", os.path.join(BUILD, "man", page)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    return r.stdout


def section(text, name):
    m = re.search(rf"^{name}\n(.*?)(?=^[A-Z][A-Z ]+\n)", text, re.M | re.S)
    assert m, f"no {name} section"
    return m.group(1)


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("width", [80, 60])
def test_renders_without_warnings(page, width):
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z",
                        os.path.join(BUILD, "man", page)], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (0, "")
    text = render(page, width)
    assert "snapvm 0.1.0" in text  # the version, filled in by meson


def help_of(*argv):
    r = subprocess.run(list(argv), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_snapvm_ctl_page_documents_every_command_and_option():
    helptext = help_of(os.path.join(BUILD, "snapvm-ctl"), "--help")
    commands = re.findall(r"^  ([a-z-]+)  +\S", helptext.split("commands:\n")[1], re.M)
    assert len(commands) >= 15
    text = render("snapvm-ctl.1")
    documented = section(text, "COMMANDS")
    for cmd in commands:
        assert re.search(rf"^       {re.escape(cmd)}( |$)", documented, re.M), cmd
        # and the synopsis the command's own help gives
        usage = help_of(os.path.join(BUILD, "snapvm-ctl"), cmd, "--help").splitlines()[0]
        for word in re.findall(r"--[a-z]+", usage):
            assert re.search(rf"^       {re.escape(cmd)} .*{word}", documented, re.M), (cmd, word)
    options = section(text, "OPTIONS")
    for opt in re.findall(r"(--?[a-z]+)", helptext.split("commands:\n")[0].split("options:\n")[1]):
        assert opt in options, opt


def test_snapvm_page_documents_every_option():
    helptext = help_of(os.path.join(BUILD, "snapvm"), "-help")
    opts = re.findall(r"^  (-[a-zA-Z-]+)", helptext, re.M)
    opts += re.findall(r"(-[a-z-]+)(?: none)?(?:,|   )", helptext.splitlines()[-1])
    assert "-daemonize" in opts and "-D" in opts and "-enable-kvm" in opts
    documented = section(render("snapvm.1"), "OPTIONS")
    for opt in set(opts):
        assert re.search(rf"^       {re.escape(opt)}\b", documented, re.M) or \
            re.search(rf"^       .*, {re.escape(opt)}\b", documented, re.M), opt


def test_meson_installs_the_pages(tmp_path):
    r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--destdir",
                        str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = subprocess.run(["meson", "introspect", "--buildoptions", BUILD],
                            capture_output=True, text=True, check=True).stdout
    opts = {o["name"]: o["value"] for o in json.loads(prefix)}
    mandir = os.path.join(str(tmp_path) + opts["prefix"], opts["mandir"], "man1")
    for page in PAGES:
        path = os.path.join(mandir, page)
        assert os.path.isfile(path), os.listdir(os.path.dirname(path))
        with open(path) as f, open(os.path.join(BUILD, "man", page)) as g:
            assert f.read() == g.read()
    assert os.access(os.path.join(str(tmp_path) + opts["prefix"], opts["bindir"], "snapvm-ctl"),
                     os.X_OK)
