#!/usr/bin/env python3
"""Source-side faults a destination could cause (fixed together: "Source: a
failure or mfd_cancel releases a thread stuck writing the main channel
..."), each played against the real source by a fake DESTINATION written
from PROTOCOL.md alone (stdlib only; peerlib.py beside it).

Usage: source_faults.py CASE MULTIFD HARNESS WORKDIR
MULTIFD is the CLI (its `send` plays the source where it suffices),
HARNESS the library harness built from source_harness.c (cancels and
COLO). The case starts the source itself (its stdout and stderr in
WORKDIR/CASE.out and CASE.err), plays its part, checks the exit status, the
error's text and the time it took, and prints one line, "PASS CASE (note)"
or "FAIL CASE: why", exiting 0 or 1 (2: usage). Every wait is bounded: a
case takes at most CASE_SECS seconds, and the source is killed at the end if
it is still running. Where the old code hung, the case waits a little past
its bound, then kills the source and fails.

Cases:
  cancel-main-stalled: a library source (legacy zero pages, 256 MiB of
      mostly zero pages, so ZERO_PAGES records fill the main channel) over
      unix, whose destination drains the data channels but stops reading
      the main channel after READY. Once the main channel holds 64 KiB
      or more unread and has stopped growing for half a second (the
      source is blocked writing it), the harness gets SIGUSR1 and calls
      mfd_cancel(): mfd_migrate returns
      -MFD_ECANCELED within CANCEL_BOUND s of the cancel (the CANCEL record
      itself may wait 2 s), with the pause and resume callbacks balanced.
      It used to stay blocked in the main-channel write forever.
  colo-frozen-secondary-unix, colo-frozen-secondary-tcp: a COLO primary
      with a 64 MiB device state; its secondary acknowledges checkpoint 0,
      then freezes at CHECKPOINT_BEGIN 1 (no heartbeats, reads nothing on
      any channel), so the primary's DEVICE_STATE write blocks. The primary
      reports the secondary lost (heartbeat-timeout 2000) within
      FROZEN_BOUND s of the freeze and goes on unprotected, pauses and
      resumes balanced. It used to hang in the write forever on unix, and
      until TCP's network-timeout (about 11 s) on tcp. (The tcp listener
      has a fixed 1 MiB receive buffer, so that what the frozen peer's
      sockets absorb does not depend on the host's tcp_rmem.)
  main-stalled-unix: `multifd send --zero-page-detection legacy
      --network-timeout 2000` of a 256 MiB zero file over unix, to a
      destination that drains the data channels but never reads the main
      channel after READY: exit 1 within STALL_BOUND s, one error line
      naming the main channel and network-timeout (about 4.4 s: the
      timeout, then 2 s offering the ERROR record). It used to hang.
  data-noread-unix: `multifd send --network-timeout 2000` of 8 MiB of data
      over unix, to a destination that reads the main channel but never
      its data channels: exit 1 within DATA_STALL_BOUND s, one error line
      naming a channel and network-timeout (SO_SNDTIMEO on unix data
      channels; about 2.1 s). It used to hang, and then took about 4.1 s:
      a send cut short by the timeout counted as progress, and the rest of
      it waited a second timeout.
  colo-no-ack: a COLO primary (256 MiB, network-timeout 2000) whose
      secondary keeps its heartbeat and drains everything but never sends
      CHECKPOINT_ACK: mfd_migrate fails "no CHECKPOINT_ACK 0 within 3000
      ms" (network-timeout plus a second per 256 MiB) within ACK_BOUND s
      of CHECKPOINT_END 0, pauses and resumes balanced. It used to wait
      forever.
  error-text-escapes: the destination's ERROR text carries an escape
      sequence, a newline and a NUL: `multifd send` prints one error line
      with each control character (the NUL too, so the text after it is
      shown) as '?', and no control byte reaches its stderr (it used to
      print them raw: a terminal escape and a forged second line; and to
      drop the text after the NUL).
  colo-error-text-escapes: the same text in the ERROR a COLO secondary
      sends after checkpoint 0: the primary's log line and its error (and
      the unprotected callback's reason) carry '?' instead.
"""
import fcntl
import os
import signal
import socket
import struct
import sys
import termios
import threading
import time

from peerlib import (CKPT_ACK, CKPT_BEGIN, CKPT_END, COMPLETE, DATA_INIT_LEN,
                     DATA_MAGIC, ERROR, HEARTBEAT, MAIN_MAGIC, READY,
                     SETUP_END, BLOCK, HELLO, Failed, Proc, exit_name, rec,
                     run_case)

# Upper bound for one case, everything included.
CASE_SECS = 15.0
# How long after its trigger each fault may take to end the source (the
# fixed code takes about 2 s, 2.2 s, 4.4 s and 3 s), and how much longer
# the case waits before it calls the source hung.
CANCEL_BOUND = 4.5
FROZEN_BOUND = 5.0
STALL_BOUND = 7.5
DATA_STALL_BOUND = 3.5
ACK_BOUND = 5.5
GRACE = 2.0

# The ERROR text of the escape cases: an SGR escape, a newline that would
# start a forged line, and a NUL that would hide the rest from C strings.
EVIL = b"evil\x1b[31mRED\x1b[0m\nfake line\0hidden"
EVIL_SHOWN = "evil?[31mRED?[0m?fake line?hidden"
EVIL_CODE = 4  # MFD_EPROTO


def queued(sock):
    """Bytes waiting in sock's receive queue (what the peer has written
    that we have not read)."""
    buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


class Source(Proc):
    """The process under test: `multifd send` or the harness."""

    def result(self):
        """The harness's report (see source_harness.c) as a dict."""
        r = {}
        with open(self.outf, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, val = line.rstrip("\n").partition(" ")
                r[key] = val
        if "pauses" in r:
            w = r["pauses"].split()
            r["pauses"], r["resumes"] = int(w[0]), int(w[2])
        for k in ("migrate_ms", "cancel_ms", "unprotected", "colo_state"):
            if k in r:
                r[k] = int(r[k])
        if "rc" in r:
            code, _, name = r["rc"].partition(" ")
            r["rc"], r["rc_name"] = int(code), name
        return r


class Dst:
    """A destination per PROTOCOL.md: listens (unix in WORKDIR, or tcp on
    an ephemeral loopback port), answers the preamble and the setup, takes
    the data channels, and then does what the case says: drain channels,
    send heartbeats, read the main channel, or none of these. Its threads
    stop at close()."""

    def __init__(self, work, tag, dl, tcp=False):
        self.dl = dl
        self.stop = threading.Event()
        self.threads = []
        self.socks = []
        if tcp:
            self.l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # A fixed receive buffer (inherited by the accepted sockets,
            # no autotuning): what a peer that stopped reading can still
            # absorb stays small whatever the host's tcp_rmem.
            self.l.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.l.bind(("127.0.0.1", 0))
            self.uri = "tcp:127.0.0.1:%d" % self.l.getsockname()[1]
        else:
            path = os.path.join(work, tag + ".sock")
            if os.path.exists(path):
                os.unlink(path)
            self.l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.l.bind(path)
            self.uri = "unix:" + path
        self.l.listen(16)
        self.m = None
        self.d = []

    def accept(self, src):
        """The next connection; fails if the source exits first."""
        while True:
            self.l.settimeout(self.dl.left(0.2))
            try:
                c, _ = self.l.accept()
                self.socks.append(c)
                return c
            except socket.timeout:
                if not src.alive():
                    raise Failed("the source %s before connecting: %s"
                                 % (exit_name(src.p.returncode),
                                    src.stderr().strip()[-300:]))

    def recvall(self, s, n):
        b = bytearray()
        while len(b) < n:
            s.settimeout(self.dl.left(1.0))
            try:
                c = s.recv(n - len(b))
            except socket.timeout:
                if self.stop.is_set():
                    raise EOFError("stopped")
                continue
            if not c:
                raise EOFError("closed after %d of %d bytes" % (len(b), n))
            b += c
        return bytes(b)

    def read_rec(self, s=None):
        t, ln = struct.unpack(">II", self.recvall(s or self.m, 8))
        body = self.recvall(s or self.m, (ln + 7) & ~7)[:ln]
        return t, body

    def ack_checkpoint0(self):
        """Reads the main channel of a COLO primary, acknowledges
        checkpoint 0 and returns at CHECKPOINT_BEGIN 1."""
        acked = False
        while True:
            t, b = self.read_rec()
            if t == CKPT_END and b == struct.pack(">Q", 0):
                self.send(rec(CKPT_ACK, b))
                acked = True
            elif t == CKPT_BEGIN and b == struct.pack(">Q", 1):
                if not acked:
                    raise Failed("CHECKPOINT_BEGIN 1 before checkpoint 0")
                return
            elif t in (ERROR, COMPLETE):
                raise Failed("record 0x%x before checkpoint 1: %r"
                             % (t, b[:200]))

    def send(self, data, s=None):
        s = s or self.m
        s.settimeout(self.dl.left(2.0))
        s.sendall(data)

    def setup(self, src):
        """Preamble, HELLO, BLOCKs, SETUP_END; READY with HELLO's
        features; then every data channel, by its id."""
        self.m = self.accept(src)
        pre = self.recvall(self.m, 16)
        if struct.unpack(">I", pre[:4])[0] != MAIN_MAGIC:
            raise Failed("main channel preamble %r" % pre)
        self.send(struct.pack(">II8x", MAIN_MAGIC, 1))
        t, b = self.read_rec()
        if t != HELLO or len(b) != 56:
            raise Failed("expected HELLO, got 0x%x (%d bytes)" % (t, len(b)))
        self.nch = struct.unpack(">I", b[24:28])[0]
        features = struct.unpack(">Q", b[40:48])[0]
        nblocks = struct.unpack(">I", b[48:52])[0]
        for _ in range(nblocks):
            t, b = self.read_rec()
            if t != BLOCK:
                raise Failed("expected BLOCK, got 0x%x" % t)
        t, b = self.read_rec()
        if t != SETUP_END:
            raise Failed("expected SETUP_END, got 0x%x" % t)
        self.send(rec(READY, struct.pack(">Q", features)))
        self.d = [None] * self.nch
        for _ in range(self.nch):
            c = self.accept(src)
            init = self.recvall(c, DATA_INIT_LEN)
            if struct.unpack(">I", init[:4])[0] != DATA_MAGIC:
                raise Failed("data channel init %r" % init[:8])
            self.d[init[24]] = c

    def spawn(self, fn, *args):
        t = threading.Thread(target=self._run, args=(fn,) + args, daemon=True)
        self.threads.append(t)
        t.start()

    def _run(self, fn, *args):
        try:
            fn(*args)
        except (OSError, EOFError, Failed):
            pass  # the source closed, or the case is over: judged elsewhere

    def drain(self, c, until=None):
        """Reads and discards everything on c until `until` (an Event) is
        set or the case stops."""
        while not self.stop.is_set() and not (until and until.is_set()):
            c.settimeout(0.2)
            try:
                if not c.recv(1 << 20):
                    return
            except socket.timeout:
                pass

    def drain_data(self, until=None):
        for c in self.d:
            self.spawn(self.drain, c, until)

    def heartbeats(self, until=None):
        def beat():
            while not self.stop.is_set() and not (until and until.is_set()):
                self.send(rec(HEARTBEAT))
                self.stop.wait(0.1)
        self.spawn(beat)

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(2.0)
        for s in self.socks + [self.l]:
            try:
                s.close()
            except OSError:
                pass


def wait_stalled(dst, src, dl, least=64 << 10, still=0.5):
    """Waits until the main channel holds at least `least` unread bytes and
    has not grown for `still` seconds: the source is blocked writing it.
    Returns the bytes queued."""
    last, since = -1, time.monotonic()
    while True:
        if not src.alive():
            raise Failed("the source %s before the main channel filled: %s"
                         % (exit_name(src.p.returncode),
                            src.stderr().strip()[-300:]))
        n = queued(dst.m)
        now = time.monotonic()
        if n != last:
            last, since = n, now
        elif n >= least and now - since >= still:
            return n
        dl.left()
        time.sleep(0.05)


def judge_exit(src, dl, bound, t0, what):
    """Waits for the source to exit within bound s of t0 (plus GRACE, to
    tell a slow source from a hung one); returns (rc, seconds since t0)."""
    rc = src.wait(dl.left(max(0.0, t0 + bound + GRACE - time.monotonic())))
    took = time.monotonic() - t0
    if rc is None:
        src.kill()
        raise Failed("source still running %.1f s after %s (bound %.1f s); "
                     "killed" % (took, what, bound))
    if took > bound:
        raise Failed("source %s %.1f s after %s (bound %.1f s): %s"
                     % (exit_name(rc), took, what, bound,
                        src.stderr().strip()[-300:]))
    return rc, took


def harness_verdict(src, rc, want_rc, words, extra=""):
    """Checks the harness's report: exit 1, mfd_migrate's code, every one
    of words in its error, the live callbacks balanced."""
    r = src.result()
    err = r.get("error", "")
    if (rc != 1 or r.get("rc") != want_rc or
            not all(w in err for w in words) or
            r.get("pauses") != r.get("resumes") or not r.get("pauses")):
        raise Failed("%s, mfd_migrate %s %s, error %r, pauses %s resumes %s%s;"
                     " want exit 1, %d, an error with %r, pauses = resumes"
                     % (exit_name(rc), r.get("rc"), r.get("rc_name"), err,
                        r.get("pauses"), r.get("resumes"), extra, want_rc,
                        words))
    return r


def cli_verdict(src, rc, words):
    """`multifd send` refused cleanly: exit 1, exactly one error line,
    naming every one of words."""
    errs = src.errors()
    if rc != 1 or len(errs) != 1 or not all(w in errs[0] for w in words):
        raise Failed("%s, error lines %r; want exit 1, one error line with %r"
                     % (exit_name(rc), errs, words))
    return errs[0]


def cancel_main_stalled(mfd, harness, work, tag, dl):
    dst = Dst(work, tag, dl)
    src = Source([harness, "--ram-mib", "256", dst.uri,
                  "zero-page-detection=legacy", "multifd-channels=2"],
                 work, tag)
    try:
        dst.setup(src)
        dst.drain_data()
        n = wait_stalled(dst, src, dl)
        t0 = time.monotonic()
        src.signal(signal.SIGUSR1)
        rc, took = judge_exit(src, dl, CANCEL_BOUND, t0, "mfd_cancel")
        r = harness_verdict(src, rc, -7, ["cancel"])
        if r["cancel_ms"] < 0:
            raise Failed("the harness never called mfd_cancel")
        return ("main channel full (%d KiB unread), -7 %.1f s after "
                "mfd_cancel, pauses %d resumes %d"
                % (n >> 10, took, r["pauses"], r["resumes"]))
    finally:
        src.kill()
        dst.close()


def colo_frozen(mfd, harness, work, tag, dl, tcp):
    dst = Dst(work, tag, dl, tcp=tcp)
    src = Source([harness, "--ram-mib", "64", "--device-state",
                  str(64 << 20), dst.uri, "x-colo=1", "dirty-tracker=manual",
                  "multifd-channels=2", "checkpoint-interval=500",
                  "heartbeat-interval=100", "heartbeat-timeout=2000"],
                 work, tag)
    frozen = threading.Event()
    try:
        dst.setup(src)
        dst.drain_data(until=frozen)
        dst.heartbeats(until=frozen)
        # ACK checkpoint 0; at CHECKPOINT_BEGIN 1 stop reading anything.
        dst.ack_checkpoint0()
        frozen.set()
        t0 = time.monotonic()
        rc, took = judge_exit(src, dl, FROZEN_BOUND, t0, "the freeze")
        r = harness_verdict(src, rc, -12, ["secondary lost",
                                           "heartbeat-timeout"])
        if r["unprotected"] != 1 or r["colo_state"] != 3:
            raise Failed("unprotected callback %d times, COLO state %d; want "
                         "once, 3 (unprotected)"
                         % (r["unprotected"], r["colo_state"]))
        return ("secondary lost %.1f s after the freeze, unprotected, "
                "pauses %d resumes %d" % (took, r["pauses"], r["resumes"]))
    finally:
        src.kill()
        dst.close()


def main_stalled(mfd, harness, work, tag, dl):
    blk = os.path.join(work, tag + ".ram")
    with open(blk, "wb") as f:
        f.truncate(256 << 20)
    dst = Dst(work, tag, dl)
    src = Source([mfd, "send", "--to", dst.uri, "--channels", "2",
                  "--zero-page-detection", "legacy", "--network-timeout",
                  "2000", blk], work, tag)
    try:
        dst.setup(src)
        dst.drain_data()
        t0 = time.monotonic()
        rc, took = judge_exit(src, dl, STALL_BOUND, t0, "READY")
        err = cli_verdict(src, rc, ["main channel", "network-timeout 2000"])
        return "%.1f s after READY, %d KiB unread on main: %s" % (
            took, queued(dst.m) >> 10, err.split("error: ", 1)[-1])
    finally:
        src.kill()
        dst.close()
        os.unlink(blk)


def data_noread(mfd, harness, work, tag, dl):
    blk = os.path.join(work, tag + ".ram")
    with open(blk, "wb") as f:
        f.write(b"\x5a" * (8 << 20))
    dst = Dst(work, tag, dl)
    src = Source([mfd, "send", "--to", dst.uri, "--channels", "2",
                  "--network-timeout", "2000", blk], work, tag)
    try:
        dst.setup(src)
        dst.spawn(dst.drain, dst.m)
        t0 = time.monotonic()
        rc, took = judge_exit(src, dl, DATA_STALL_BOUND, t0, "READY")
        err = cli_verdict(src, rc, ["channel", "network-timeout 2000"])
        return "%.1f s after READY: %s" % (took, err.split("error: ", 1)[-1])
    finally:
        src.kill()
        dst.close()
        os.unlink(blk)


def colo_no_ack(mfd, harness, work, tag, dl):
    dst = Dst(work, tag, dl)
    src = Source([harness, "--ram-mib", "256", dst.uri, "x-colo=1",
                  "dirty-tracker=manual", "multifd-channels=2",
                  "network-timeout=2000", "heartbeat-interval=100",
                  "heartbeat-timeout=2000"], work, tag)
    try:
        dst.setup(src)
        dst.drain_data()
        dst.heartbeats()
        while True:
            t, b = dst.read_rec()
            if t == CKPT_END:
                break
            if t in (ERROR, COMPLETE):
                raise Failed("record 0x%x before CHECKPOINT_END 0: %r"
                             % (t, b[:200]))
        # Keep reading the main channel (heartbeats, a CANCEL or ERROR).
        dst.spawn(dst.drain, dst.m)
        t0 = time.monotonic()
        rc, took = judge_exit(src, dl, ACK_BOUND, t0, "CHECKPOINT_END 0")
        r = harness_verdict(src, rc, -12,
                            ["no CHECKPOINT_ACK 0 within 3000 ms"])
        return ("%.1f s after CHECKPOINT_END 0: %s, pauses %d resumes %d"
                % (took, r["error"], r["pauses"], r["resumes"]))
    finally:
        src.kill()
        dst.close()


def check_clean_text(src, where):
    """No control character but the newlines ending lines, anywhere in the
    source's stderr, and no line starting with the forged text."""
    raw = src.stderr_bytes()
    bad = sorted({c for c in raw if (c < 0x20 and c != 0x0a) or c == 0x7f})
    if bad:
        raise Failed("%s: stderr holds control bytes %s: %r"
                     % (where, ", ".join("0x%02x" % c for c in bad),
                        raw[-300:]))
    forged = [ln for ln in src.stderr().splitlines()
              if ln.startswith("fake line")]
    if forged:
        raise Failed("%s: a forged line on stderr: %r" % (where, forged))


def error_text(mfd, harness, work, tag, dl):
    blk = os.path.join(work, tag + ".ram")
    with open(blk, "wb") as f:
        f.write(b"\x5a" * (1 << 20))
    dst = Dst(work, tag, dl)
    src = Source([mfd, "send", "--to", dst.uri, "--channels", "2", blk],
                 work, tag)
    try:
        dst.setup(src)
        dst.drain_data()
        dst.send(rec(ERROR, struct.pack(">I", EVIL_CODE) + EVIL))
        dst.spawn(dst.drain, dst.m)
        t0 = time.monotonic()
        rc, took = judge_exit(src, dl, 3.0, t0, "the ERROR")
        err = cli_verdict(src, rc, ["destination reported", EVIL_SHOWN])
        check_clean_text(src, "send")
        return "one error line: %s" % err.split("error: ", 1)[-1]
    finally:
        src.kill()
        dst.close()
        os.unlink(blk)


def colo_error_text(mfd, harness, work, tag, dl):
    dst = Dst(work, tag, dl)
    src = Source([harness, "--ram-mib", "16", dst.uri, "x-colo=1",
                  "dirty-tracker=manual", "multifd-channels=2",
                  "checkpoint-interval=300", "heartbeat-interval=100",
                  "heartbeat-timeout=2000"], work, tag)
    try:
        dst.setup(src)
        dst.drain_data()
        dst.heartbeats()
        dst.ack_checkpoint0()
        dst.send(rec(ERROR, struct.pack(">I", EVIL_CODE) + EVIL))
        dst.spawn(dst.drain, dst.m)
        t0 = time.monotonic()
        rc, took = judge_exit(src, dl, 3.0, t0, "the ERROR")
        r = harness_verdict(src, rc, -6, [EVIL_SHOWN])
        check_clean_text(src, "primary")
        logged = [ln for ln in src.stderr().splitlines()
                  if ln.startswith("multifd: ") and EVIL_SHOWN in ln]
        reason = [ln for ln in src.stderr().splitlines()
                  if "unprotected: " in ln and EVIL_SHOWN in ln]
        if not logged or not reason:
            raise Failed("no log line (%r) or unprotected reason (%r) with %r"
                         % (logged, reason, EVIL_SHOWN))
        return "log: %s" % logged[0]
    finally:
        src.kill()
        dst.close()


CASES = {
    "cancel-main-stalled": cancel_main_stalled,
    "colo-frozen-secondary-unix":
        lambda m, h, w, t, dl: colo_frozen(m, h, w, t, dl, False),
    "colo-frozen-secondary-tcp":
        lambda m, h, w, t, dl: colo_frozen(m, h, w, t, dl, True),
    "main-stalled-unix": main_stalled,
    "data-noread-unix": data_noread,
    "colo-no-ack": colo_no_ack,
    "error-text-escapes": error_text,
    "colo-error-text-escapes": colo_error_text,
}


def main():
    return run_case(CASES, "CASE MULTIFD HARNESS WORKDIR", CASE_SECS)


if __name__ == "__main__":
    sys.exit(main())
