"""Every command-line error: one line on stderr naming the culprit, exit 1."""
import pytest

from vm import run_snapvm

CASES = [
    (["-frobnicate"], "unknown option '-frobnicate'"),
    (["stray"], "unexpected argument 'stray'"),
    (["-m"], "option '-m' needs an argument"),
    (["-m", "abc"], "-m: invalid size 'abc'"),
    (["-m", "12X"], "-m: invalid size '12X'"),
    (["-m", "1"], "-m: '1' is out of range"),
    (["-m", "100G"], "-m: '100G' is out of range"),
    (["-m", "size=64M,slots=2"], "unknown parameter 'slots'"),
    (["-smp", "0"], "-smp: '0'"),
    (["-smp", "x"], "'cpus'"),
    (["-smp", "65"], "-smp: '65'"),
    (["-kernel", "/nonexistent/vmlinux"], "-kernel: '/nonexistent/vmlinux': No such file"),
    (["-initrd", "/nonexistent/initrd"], "-initrd: '/nonexistent/initrd': No such file"),
    (["-device", "e1000"], "unsupported device 'e1000'"),
    (["-device", "virtio-blk-pci"], "missing drive=NODE"),
    (["-device", "virtio-blk-pci,drive=disk9,bogus=1"], "unknown parameter 'bogus'"),
    (["-device", "virtio-blk-pci,drive=disk9"], "drive 'disk9'"),
    (["-blockdev", "{\"driver\": "], "-blockdev"),
    (["-blockdev", "driver=raw,,x"], "-blockdev"),
    (["-serial", "pty"], "-serial: unsupported back end 'pty'"),
    (["-serial", "unix:/tmp/x.sock,server=off"], "only server=on"),
    (["-serial", "file:/nonexistent/dir/out"], "-serial: cannot open '/nonexistent/dir/out'"),
    (["-display", "gtk"], "-display: unsupported display 'gtk'"),
    (["-monitor", "stdio"], "-monitor: unsupported monitor 'stdio'"),
    (["-mem-path", "/nonexistent/dir/ram"], "-mem-path: '/nonexistent/dir/ram'"),
    (["-loadvm", "snap1"], "-loadvm snap1"),
    (["-daemonize", "-serial", "stdio"], "-serial stdio cannot be used with -daemonize"),
    (["-serial", "null", "-pidfile", "/nonexistent/dir/pid"],
     "-pidfile: cannot create '/nonexistent/dir/pid'"),
    (["-m", "64", "-serial", "null", "-blockdev", "driver=file,node-name=f0,filename=/nonexistent/x.img"],
     "/nonexistent/x.img"),
]


@pytest.mark.parametrize("args, needle", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_error_is_one_line_naming_the_culprit(args, needle):
    r = run_snapvm(args)
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("snapvm: ")
    assert needle in lines[0], lines[0]
    assert r.stdout == ""


def test_kernel_that_exists_is_refused_clearly(tmp_path):
    k = tmp_path / "vmlinux"
    k.write_bytes(b"\x7fELF" + b"\0" * 60)
    r = run_snapvm(["-kernel", str(k)])
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1 and "-kernel" in r.stderr


def test_help_and_version():
    r = run_snapvm(["-help"])
    assert r.returncode == 0 and "-blockdev" in r.stdout
    r = run_snapvm(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("snapvm version")
