"""A small QMP client written from QEMU's QMP specification, for the tests.

    with QMP("unix:/tmp/qmp.sock") as qmp:      # connects and negotiates
        qmp.cmd("query-status")                  # -> the "return" value
        qmp.cmd("human-monitor-command", command_line="info status")
        qmp.event("STOP", timeout=5)             # waits for an event

Keyword arguments have '_' turned into '-' (job_id= is "job-id"); pass
`args={...}` for names that really contain '_'.  Errors raise QMPError
with the class and desc.  Replies and events are told apart as they
arrive: events go to `events` (a list, oldest first) and `event()` waits
for one.  For protocol tests, `send_raw()` writes bytes as they are,
`send()` writes one message without waiting, and `recv()` returns the next
non-event message.

`SnapVM` starts build/snapvm with a QMP socket and gives a connected client;
tests of other areas reuse it.
"""
import json
import os
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SNAPVM = os.path.join(ROOT, os.environ.get("SNAPVM_BUILD") or "build", "snapvm")


_AUTO = object()  # execute(): pick an id (None is a valid id: JSON null)


class QMPError(Exception):
    def __init__(self, reply):
        err = reply["error"]
        self.cls = err["class"]
        self.desc = err["desc"]
        self.reply = reply
        super().__init__(f"{self.cls}: {self.desc}")


def connect_socket(address, timeout=10.0):
    """address: "unix:PATH", "tcp:HOST:PORT" or a path."""
    if address.startswith("tcp:"):
        host, _, port = address[4:].rpartition(":")
        sock = socket.create_connection((host or "localhost", int(port)), timeout=timeout)
    else:
        path = address[5:] if address.startswith("unix:") else address
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
    return sock


class QMP:
    def __init__(self, address, negotiate=True, timeout=10.0):
        self.sock = connect_socket(address, timeout)
        self.timeout = timeout
        self.buf = b""
        self.events = []
        self.lines = []  # every message received, raw, for protocol checks
        self.greeting = self._read_message()
        self._next_id = 0
        if negotiate:
            self.cmd("qmp_capabilities")

    # ---- wire ----

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def send(self, msg):
        self.send_raw(json.dumps(msg).encode() + b"\n")

    def _read_message(self, timeout=None):
        """The next message of either kind, or raise TimeoutError."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the server")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no message from the server") from None
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        self.lines.append(line + b"\n")
        return json.loads(line)

    def recv(self, timeout=None):
        """The next reply (or greeting); events met on the way are queued."""
        while True:
            msg = self._read_message(timeout)
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    # ---- commands ----

    def execute(self, name, args=None, id=_AUTO):
        """Send a command and return its whole reply (return or error)."""
        if id is _AUTO:
            self._next_id += 1
            id = f"py-{self._next_id}"
        msg = {"execute": name, "id": id}
        if args is not None:
            msg["arguments"] = args
        self.send(msg)
        reply = self.recv()
        assert reply.get("id") == id, f"reply out of order: {reply!r}"
        return reply

    def cmd(self, name, args=None, **kwargs):
        """Run a command; return its "return" value or raise QMPError."""
        if kwargs:
            args = dict(args or {})
            args.update({k.replace("_", "-"): v for k, v in kwargs.items()})
        reply = self.execute(name, args)
        if "error" in reply:
            raise QMPError(reply)
        return reply["return"]

    def hmp(self, command_line):
        return self.cmd("human-monitor-command", command_line=command_line)

    # ---- events ----

    def event(self, name, timeout=None, match=None):
        """Wait for (and remove from the queue) the first event `name`
        whose data contains every item of `match`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for i, ev in enumerate(self.events):
                data = ev.get("data", {})
                if ev["event"] == name and all(data.get(k) == v for k, v in (match or {}).items()):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event")
            msg = self._read_message(left)
            if "event" not in msg:
                raise AssertionError(f"unexpected reply while waiting for {name}: {msg!r}")
            self.events.append(msg)

    def clear_events(self):
        self.events = []

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SnapVM:
    """A running build/snapvm with a QMP unix socket.

        with SnapVM(extra_args=["-S"]) as vm:
            vm.qmp.cmd("query-status")
            other = vm.connect()            # one more client
    """

    def __init__(self, extra_args=(), qmp_specs=(), binary=SNAPVM):
        self.dir = tempfile.TemporaryDirectory(prefix="snapvm-test-")
        self.sock = os.path.join(self.dir.name, "qmp.sock")
        args = [binary, "-display", "none", "-qmp", f"unix:{self.sock},server=on,wait=off"]
        for spec in qmp_specs:
            args += ["-qmp", spec]
        self.args = args + list(extra_args)
        self.proc = None
        self.qmp = None

    def start(self, timeout=10.0):
        self.log = open(os.path.join(self.dir.name, "snapvm.log"), "w+")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"snapvm exited with {self.proc.returncode}: {self.output()}")
            try:
                self.qmp = QMP(self.sock)
                return self
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def connect(self, negotiate=True):
        return QMP(self.sock, negotiate=negotiate)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp.cmd("quit")
            except Exception:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.qmp:
            self.qmp.close()
        self.log.close()
        self.dir.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
