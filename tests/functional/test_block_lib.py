"""Helpers for the block-layer functional tests (no tests here).

`Blocktool` runs build/tests/blocktool, the block layer's test driver, as a
long-lived process fed one command per line, so that a test can run
thousands of operations on one open image (holding its locks) cheaply.
"""
import os
import subprocess
import zlib

from conftest import BUILD

# SNAPVM_BLOCKTOOL selects another build (e.g. an ASan one: build-asan/tests/block/blocktool).
BLOCKTOOL = os.environ.get("SNAPVM_BLOCKTOOL", os.path.join(BUILD, "tests", "block", "blocktool"))


class BlockError(Exception):
    pass


def blockdev_qcow2(path, name="disk0", extra=""):
    opts = f"driver=qcow2,node-name={name},file.driver=file,file.filename={path}"
    return opts + ("," + extra if extra else "")


def blockdev_raw(path, name="disk0", extra=""):
    opts = f"driver=raw,node-name={name},file.driver=file,file.filename={path}"
    return opts + ("," + extra if extra else "")


class Blocktool:
    def __init__(self, *blockdevs, pool=None):
        assert os.access(BLOCKTOOL, os.X_OK), f"{BLOCKTOOL} is not built"
        args = [BLOCKTOOL]
        if pool:
            args += ["--pool", pool]
        for b in blockdevs:
            args += ["--blockdev", b]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)

    def cmd(self, line, check=True):
        """Run one command; return (data_lines, final_line)."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        data = []
        while True:
            out = self.proc.stdout.readline()
            if not out:
                err = self.proc.stderr.read()
                raise BlockError(f"blocktool exited: {err.strip()}")
            out = out.rstrip("\n")
            if out.startswith("ok") or out.startswith("error: "):
                break
            data.append(out)
        if check and out.startswith("error: "):
            raise BlockError(out[len("error: "):])
        return data, out

    def ok(self, line):
        return self.cmd(line)[1]

    def crc(self, line):
        final = self.ok(line)
        return int(final.split("crc=")[1], 16)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_blocktool(*args):
    """One-shot blocktool run: args are --blockdev/-c pairs etc."""
    return subprocess.run([BLOCKTOOL, *args], capture_output=True, text=True)


def crc(data):
    return zlib.crc32(data) & 0xFFFFFFFF


def qemu_img(*args, check=True):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=check)


def qemu_img_check(path):
    """qemu-img check must report no errors and no leaks."""
    r = qemu_img("check", path, check=False)
    assert r.returncode == 0, f"qemu-img check {path} failed ({r.returncode}):\n{r.stdout}{r.stderr}"
    assert "No errors were found" in r.stdout, r.stdout
    assert "leaked" not in r.stdout, r.stdout
    return r.stdout


def read_raw_via_qemu(path, tmpdir):
    """The guest-visible content of an image, as qemu-img reads it."""
    out = os.path.join(str(tmpdir), "qemu-read.raw")
    qemu_img("convert", "-O", "raw", path, out)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data
