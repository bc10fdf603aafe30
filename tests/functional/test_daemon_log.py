"""-daemonize keeps snapvm's messages: -D FILE appends them to a log file (each
line with a UTC timestamp and the pid), without -D they go to syslog (checked
through a /dev/log of the test's own, in a private mount namespace), and
set-up errors of a daemon reach the terminal (without -D) or the log, which
the parent then names."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from vm import run_snapvm

pytestmark = pytest.mark.kvm

STAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z snapvm\[(\d+)\]: "


def wait_exit(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"daemon {pid} did not exit"
        time.sleep(0.05)


def test_daemon_messages_go_to_the_log_file(tmp_path):
    log = tmp_path / "snapvm.log"
    log.write_text("an older line\n")  # -D appends
    pidfile = tmp_path / "pid"
    env = dict(os.environ, SNAPVM_DEBUG="1")
    r = run_snapvm(["-daemonize", "-D", str(log), "-pidfile", str(pidfile),
                    "-qmp", "tcp:127.0.0.1:0,server=on,wait=off", "-display", "none"], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # everything went to the log
    pid = int(pidfile.read_text())
    try:
        text = log.read_text()
        assert text.startswith("an older line\n")
        m = re.search(STAMP + r"QMP listening on tcp:127\.0\.0\.1:\d+$", text, re.M)
        assert m and int(m.group(1)) == pid, text
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_exit(pid)
    # a message of the detached daemon, long after its stderr was closed
    assert re.search(STAMP + r"debug: .*signal 15: shutting down$", log.read_text(), re.M)


def test_daemon_set_up_error_is_in_the_log_and_named(tmp_path):
    log = tmp_path / "err.log"
    r = run_snapvm(["-daemonize", "-D", str(log), "-loadvm", "nosuch", "-display", "none"])
    assert r.returncode == 1
    assert r.stdout == f"snapvm: set-up failed; see {log}\n"
    assert re.search(STAMP + r"-loadvm nosuch", log.read_text(), re.M), log.read_text()


def test_daemon_set_up_error_without_log_reaches_the_terminal(tmp_path):
    r = run_snapvm(["-daemonize", "-loadvm", "nosuch", "-display", "none"])
    assert r.returncode == 1
    assert r.stderr.startswith("snapvm: -loadvm nosuch"), r.stderr


def test_foreground_log_file(tmp_path):
    log = tmp_path / "fg.log"
    r = run_snapvm(["-D", str(log), "-loadvm", "nosuch", "-display", "none"])
    assert r.returncode == 1 and r.stderr == ""
    assert re.search(STAMP + r"-loadvm nosuch", log.read_text(), re.M)


def test_bad_log_file_is_an_error(tmp_path):
    r = run_snapvm(["-D", str(tmp_path / "no" / "such" / "dir.log")])
    assert r.returncode == 1
    assert r.stderr.startswith(f"snapvm: -D: cannot open log file '{tmp_path}/no/such/dir.log'")


SYSLOG_SCRIPT = r'''
set -e
# a private mount namespace: a /dev of our own, with a /dev/log we listen on
T=$(mktemp -d)
mkdir "$T/olddev"
mount --rbind /dev "$T/olddev"
mount -t tmpfs tmpfs /dev
for n in null zero kvm urandom random; do
    touch "/dev/$n"
    mount --bind "$T/olddev/$n" "/dev/$n"
done
exec /usr/bin/python3 -c "$PY" "$@"
'''

SYSLOG_PY = r'''
import os, signal, socket, subprocess, sys, time
snapvm, pidfile = sys.argv[1:3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
s.settimeout(10)
r = subprocess.run([snapvm, "-daemonize", "-pidfile", pidfile, "-display", "none"],
                   env=dict(os.environ, SNAPVM_DEBUG="1"))
assert r.returncode == 0, r
os.kill(int(open(pidfile).read()), signal.SIGTERM)
while True:
    m = s.recv(4096).decode()
    print(m, flush=True)
    if "shutting down" in m:
        break
'''


def test_daemon_without_log_file_uses_syslog(tmp_path, snapvm_bin):
    if os.getuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private /dev/log")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c",
                        SYSLOG_SCRIPT, "syslog-test", snapvm_bin, str(tmp_path / "pid")],
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, PY=SYSLOG_PY))
    assert r.returncode == 0, r.stderr
    # facility daemon (3), priority debug (7): <31>; ident snapvm with the pid
    assert re.search(r"^<31>\w{3} [ \d]\d \d\d:\d\d:\d\d snapvm\[\d+\]: debug: .*"
                     r"signal 15: shutting down$", r.stdout, re.M), r.stdout
