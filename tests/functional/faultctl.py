"""Client for snapvm's fault-injection control socket (src/block/fault.c).

    env = fault_env(tmp_path)                  # SNAPVM_FAULT_CTL=<tmp>/fault.sock
    g = Guest(tmp_path, disks=..., env=env)   # or VM(..., env=env)
    f = FaultCtl(env["SNAPVM_FAULT_CTL"])
    f.reset(); g.qmp.cmd("delvm", tag="a"); n = f.counts()["write"]
    f.arm("op=write,nth=3,errno=EIO"); ...; f.disarm()

Every host I/O of snapvm's block layer (pread, pwrite, fdatasync,
ftruncate, fallocate) goes through one hook; the socket arms a fault at a
point in time (the match count starts at "arm"), so a sweep can fail the
Nth write of one command.
"""
import json
import os
import socket
import time


def fault_env(tmpdir, name="fault.sock", base=None):
    env = dict(os.environ if base is None else base)
    env["SNAPVM_FAULT_CTL"] = os.path.join(str(tmpdir), name)
    return env


class FaultCtl:
    def __init__(self, path, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.f = self.sock.makefile("rwb")

    def _cmd(self, line):
        self.f.write(line.encode() + b"\n")
        self.f.flush()
        reply = self.f.readline()
        assert reply, "the fault control socket closed"
        r = json.loads(reply)
        if "error" in r:
            raise ValueError(r["error"])
        return r

    def arm(self, spec):
        self._cmd("arm " + spec)

    def disarm(self):
        self._cmd("disarm")

    def reset(self):
        self._cmd("reset")

    def counts(self):
        return self._cmd("counts")

    def close(self):
        self.f.close()
        self.sock.close()
