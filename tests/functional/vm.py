"""A reusable driver for snapvm in functional tests.

    with VM(["-m", "64"]) as vm:
        vm.wait_ready()
        assert vm.cmd("sum").startswith("sum ")

The serial line is the guest's console: by default it is snapvm's stdio
(`-serial stdio`, nothing is lost before the test starts reading); with
serial="unix" it is `-serial unix:PATH,server=on,wait=on`, and snapvm waits
for this driver to connect before the guest starts.  Every line read is kept
in `vm.lines`.  `cmd()` sends one command and returns its one reply line,
skipping the timer's interleaved `tick N` lines.

The guest's fill and checksum functions are mirrored here (fill_word,
checksum) so tests can check the guest's answers against an independent
computation: keep them in step with guest/lib.c.
"""
import os
import queue
import select
import re
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

from conftest import SNAPVM

TICK_RE = re.compile(r"^tick (\d+)$")
READY = "snapvm guest ready"
# The built-in guest's data region starts at the first 2 MiB boundary above
# its image (guest/kernel.c: data_init); its image ends below 2 MiB.
DATA_START = 2 << 20

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(x):
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    x ^= x >> 31
    return x


def fill_word(seed, index):
    return mix64((seed + (index + 1) * GOLDEN) & M64)


def checksum_words(words):
    acc = 0
    for i, w in enumerate(words):
        acc = (acc + (((w ^ ((i * GOLDEN) & M64)) * 0xFF51AFD7ED558CCD) & M64)) & M64
    return mix64(acc ^ len(words))


def checksum_bytes(data):
    """The guest's checksum of a byte string (a multiple of 8 bytes)."""
    return checksum_words(struct.unpack("<%dQ" % (len(data) // 8), data))


def sector_bytes(seed):
    """The 512 bytes that `disk write D LBA SEED` writes."""
    return struct.pack("<64Q", *[fill_word(seed, i) for i in range(64)])


class VMError(AssertionError):
    pass


class VM:
    def __init__(self, args=(), serial="stdio", tmpdir=None, env=None):
        self.args = list(args)
        self.serial = serial
        self._own_tmp = None
        if tmpdir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="snapvm-")
            tmpdir = self._own_tmp.name
        self.tmpdir = str(tmpdir)
        self.env = env
        self.proc = None
        self.sock = None
        self.lines = []
        self._q = queue.Queue()
        self._stderr_path = os.path.join(self.tmpdir, "stderr.log")
        self._reader = None
        self._stderr = None
        self._fd = None
        self._rlock = threading.Lock()  # held while bytes are read and split into lines
        self._partial = b""  # the start of a line whose end has not arrived
        self._eof = False

    # ---- lifecycle ----

    def start(self):
        argv = [SNAPVM] + self.args
        if self.serial == "unix":
            self.serial_path = os.path.join(self.tmpdir, "serial.sock")
            argv += ["-serial", f"unix:{self.serial_path},server=on,wait=on"]
        elif self.serial == "stdio":
            argv += ["-serial", "stdio"]
        # serial=None: no -serial option (snapvm's default is stdio).
        self._stderr = open(self._stderr_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=self.env,
        )
        if self.serial == "unix":
            self.sock = self._connect(self.serial_path)
            self._fd = self.sock.fileno()
        else:
            # stdio, or serial=None: the default back end (stdio), or nothing
            self._fd = self.proc.stdout.fileno()
        self._reader = threading.Thread(target=self._read_lines, daemon=True)
        self._reader.start()
        return self

    def _connect(self, path, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise VMError(f"snapvm exited with {self.proc.returncode}: {self.stderr()}")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise VMError(f"cannot connect to {path}")
                time.sleep(0.02)

    def _read_lines(self):
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while True:
            # A timeout, so that a closed fd (whose number may be reused)
            # is noticed through _eof rather than watched for ever.
            ready = poller.poll(200)
            with self._rlock:
                if self._eof or (ready and not self._pump()):
                    return

    def _pump(self):
        """Read what the fd holds now, without blocking, and queue its
        complete lines; at EOF queue the last partial line and None.
        Called with _rlock held; returns False at EOF."""
        if self._eof:
            return False
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while True:
            try:
                if not poller.poll(0):
                    return True
                data = os.read(self._fd, 65536)
            except (OSError, ValueError):
                data = b""
            if not data:
                if self._partial:
                    self._queue_line(self._partial)
                    self._partial = b""
                self._eof = True
                self._q.put(None)
                return False
            *lines, self._partial = (self._partial + data).split(b"\n")
            for raw in lines:
                self._queue_line(raw)

    def _queue_line(self, raw):
        self._q.put(raw.decode(errors="replace").rstrip("\r\n"))

    def settle(self, cut=False):
        """Read every byte snapvm has written to the serial line so far, into
        `lines` (as drain() does), and return the start of a line it has not
        finished ('' if none).  Meant for a stopped guest: once QMP `stop` has
        answered, every vCPU is parked and everything the guest printed is
        in the pipe or socket, so what this returns is all of it -- no
        output is still in flight.  With cut=True that unfinished line ends
        here (it goes to `lines` as it is), so that what the guest prints
        next starts a line of its own: use it before loading a snapshot,
        whose guest carries on from another point of its output."""
        with self._rlock:
            self._pump()
            partial = self._partial.decode(errors="replace")
            if cut and self._partial:
                self._queue_line(self._partial)
                self._partial = b""
        self.drain()
        return "" if cut else partial

    def stderr(self):
        if not self._stderr.closed:
            self._stderr.flush()
        with open(self._stderr_path, errors="replace") as f:
            return f.read()

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Ask snapvm to quit with `sig`; returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise VMError(f"snapvm did not exit within {timeout}s of signal {sig}")
        self._close()
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self):
        with self._rlock:  # what is left is read, and the reader stops, before the fds go
            if self._fd is not None and self._pump():
                if self._partial:
                    self._queue_line(self._partial)
                    self._partial = b""
                self._eof = True
                self._q.put(None)
        if self.sock:
            self.sock.close()
            self.sock = None
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        if self._stderr and not self._stderr.closed:
            self._stderr.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
        if self._own_tmp:
            self._own_tmp.cleanup()

    # ---- serial I/O ----

    def readline(self, timeout=10):
        """Next serial line, or VMError on timeout or EOF."""
        try:
            line = self._q.get(timeout=timeout)
        except queue.Empty:
            raise VMError(f"no serial output within {timeout}s; last lines: {self.lines[-5:]}")
        if line is None:
            self._q.put(None)
            raise VMError(f"serial closed; snapvm stderr: {self.stderr()}")
        self.lines.append(line)
        return line

    def wait_for(self, regex, timeout=10):
        """Read lines until one matches `regex`; returns the match."""
        pattern = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise VMError(f"no line matching {regex!r} within {timeout}s: {self.lines[-5:]}")
            m = pattern.search(self.readline(timeout=left))
            if m:
                return m

    def wait_ready(self, timeout=10):
        # Not anchored at the start: a reset can cut the line the guest was
        # printing, and the banner then follows its first half on one line.
        self.wait_for(re.escape(READY) + "$", timeout)

    def write(self, text):
        data = text.encode()
        if self.sock:
            self.sock.sendall(data)
        else:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def drain(self):
        """Consume the lines received so far (kept in self.lines)."""
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._q.put(None)
                return
            self.lines.append(line)

    def cmd(self, line, timeout=30):
        """Send one command line; return its reply line (tick lines skipped).

        Lines already received are drained first, so the reply cannot be
        confused with older output.  For `tick`, a timer tick printed just
        before the reply may be returned instead; both carry the current count.
        """
        self.drain()
        self.write(line + "\n")
        want_tick = line.strip() == "tick"
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise VMError(f"no reply to {line!r} within {timeout}s")
            reply = self.readline(timeout=left)
            if TICK_RE.match(reply) and not want_tick:
                continue
            return reply

    def tick(self):
        """The guest's current tick count (via the `tick` command)."""
        m = TICK_RE.match(self.cmd("tick"))
        if not m:
            raise VMError(f"bad tick reply: {self.lines[-1]!r}")
        return int(m.group(1))

    def sum(self):
        reply = self.cmd("sum")
        m = re.match(r"^sum ([0-9a-f]{16})$", reply)
        if not m:
            raise VMError(f"bad sum reply: {reply!r}")
        return int(m.group(1), 16)


def run_snapvm(args, timeout=10, **kw):
    """Run snapvm to completion (for command-line error tests)."""
    return subprocess.run([SNAPVM] + list(args), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)
