"""What the Python peers of the end-to-end tests share (peer_faults.py
plays a source against `multifd recv`, source_faults.py a destination
against `multifd send` and the library): PROTOCOL.md's numbers and record
framing, one deadline per case, the process under test with its output in
files, and the driver that turns a case into one PASS or FAIL line.
"""
import os
import signal
import struct
import subprocess
import sys
import time

# PROTOCOL.md 1-4: magics and main-channel record types.
MAIN_MAGIC = 0x4D464443
DATA_MAGIC = 0x11223344
DATA_INIT_LEN = 64
HELLO, BLOCK, SETUP_END = 0x1, 0x2, 0x3
ITER_END, DEVICE_STATE, COMPLETE = 0x11, 0x20, 0x22
CKPT_BEGIN, CKPT_END, HEARTBEAT = 0x30, 0x31, 0x80000050
READY, DONE, CKPT_ACK, ERROR = 0x1001, 0x1002, 0x1003, 0x2000


class Failed(Exception):
    """The case's verdict: FAIL with this message."""


class Deadline:
    """The case's one clock: every socket and process wait takes its
    timeout from here, so no step can outlive the case."""

    def __init__(self, secs):
        self.secs = secs
        self.t0 = time.monotonic()
        self.end = self.t0 + secs

    def left(self, cap=None):
        t = self.end - time.monotonic()
        if t <= 0:
            raise Failed("case took longer than %.0f s" % self.secs)
        return t if cap is None else min(t, cap)


def rec(t, body=b""):
    """One main-channel record: type, length, body padded to 8 bytes."""
    return struct.pack(">II", t, len(body)) + body + b"\0" * ((-len(body)) % 8)


def exit_name(rc):
    if rc is None:
        return "still running"
    return "killed by signal %d" % -rc if rc < 0 else "exit %d" % rc


class Proc:
    """The process under test, its stdout and stderr in WORKDIR/TAG.out
    and TAG.err."""

    def __init__(self, cmd, work, tag):
        self.outf = os.path.join(work, tag + ".out")
        self.errf = os.path.join(work, tag + ".err")
        with open(self.outf, "wb") as out, open(self.errf, "wb") as err:
            self.p = subprocess.Popen(cmd, stdout=out, stderr=err,
                                      stdin=subprocess.DEVNULL)

    def alive(self):
        return self.p.poll() is None

    def wait(self, secs):
        """The exit status, or None if still running after secs."""
        try:
            return self.p.wait(max(secs, 0.01))
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def stderr_bytes(self):
        with open(self.errf, "rb") as f:
            return f.read()

    def stderr(self):
        return self.stderr_bytes().decode("utf-8", "replace")

    def errors(self):
        return [ln for ln in self.stderr().splitlines() if "error:" in ln]


def run_case(cases, usage, secs):
    """main(): argv is CASE then the case's arguments (as many as usage
    names after CASE); prints "PASS CASE (note)" or "FAIL CASE: why" and
    returns 0, 1, or 2 for bad usage."""
    nargs = len(usage.split()) - 1
    if len(sys.argv) != nargs + 2 or sys.argv[1] not in cases:
        sys.stderr.write("usage: %s %s\ncases: %s\n"
                         % (os.path.basename(sys.argv[0]), usage,
                            " ".join(cases)))
        return 2
    case = sys.argv[1]
    # A TERM (the wrapper's timeout) still runs the cases' cleanup.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    dl = Deadline(secs)
    try:
        note = cases[case](*sys.argv[2:], case, dl)
    except (Failed, OSError, EOFError) as e:
        print("FAIL %s: %s" % (case, e))
        return 1
    print("PASS %s (%s)" % (case, note))
    return 0
