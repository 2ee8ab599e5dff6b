#!/usr/bin/env python3
"""Five destination faults a hostile source could cause (fixed together:
"Destination: five faults a hostile source could cause"), each played
against a real `multifd recv` by a small source written from PROTOCOL.md
alone (stdlib only; a zstd frame is built by hand).

Usage: peer_faults.py CASE MULTIFD WORKDIR
Starts `multifd recv --listen unix:WORKDIR/CASE.sock ...` itself (its
stdout and stderr in WORKDIR/CASE.out and CASE.err), plays the source,
checks the outcome and prints one line, "PASS CASE (note)" or "FAIL CASE:
why", exiting 0 or 1 (2: usage). Every wait is bounded: a case takes at
most CASE_SECS seconds, and recv is killed at the end if still running.

Cases:
  uffd-race-4k, uffd-race-8k, uffd-race-64k: with --into anon: (userfaultfd
      placement), every page of the block sent on each of four channels at
      once. A channel whose UFFDIO_COPY met EEXIST used to copy a whole
      migration page, of which another channel may have placed only some
      host pages: touching the rest killed recv with SIGBUS (8 KiB and
      64 KiB pages; 4 KiB pages never could: a control). recv must not die
      by a signal; the migration then completes.
  zstd-window-27: a zstd frame header asking for a 2^27-byte window is
      refused naming the window (it used to be accepted, 128 MiB a
      channel). zstd-window-25: 2^25, the most level 20 uses, still decodes:
      the migration completes with the right digest.
  colo-complete-before-ckpt0: a COLO session's COMPLETE before checkpoint
      0 was committed is refused (it used to end with the empty replica,
      exit 0).
  missing-channel: 2 channels declared, 1 connected: recv fails within
      handshake-timeout of READY (it used to wait forever).
  colo-hb-strays: after checkpoint 0 the primary goes silent while strays
      connect every 300 ms; colo-hb-iteration-end: the primary goes silent
      at an ITERATION_END whose SYNC never comes. Either way the secondary
      promotes checkpoint 0 within 2.5 s of the heartbeat timeout's start
      (it used to wait for idle-timeout, 8 s).
"""
import os
import socket
import struct
import sys
import threading
import time
import uuid as _uuid

from peerlib import (BLOCK, CKPT_ACK, CKPT_BEGIN, CKPT_END, COMPLETE, DATA_MAGIC,
                     DEVICE_STATE, DONE, ERROR, HEARTBEAT, HELLO, ITER_END,
                     MAIN_MAGIC, READY, SETUP_END, Failed, Proc, exit_name,
                     rec, run_case)

FEAT_COLO = 4
M_NONE, M_ZSTD = 0x00, 0x04
ZPD_MULTIFD = 2

# Upper bound for one case, everything included (the reference run too).
CASE_SECS = 14.0


def recvall(s, n, dl, cap=None):
    b = b""
    while len(b) < n:
        s.settimeout(dl.left(cap))
        try:
            c = s.recv(n - len(b))
        except socket.timeout:
            raise Failed("no reply from recv in time (%d of %d bytes)"
                         % (len(b), n))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b


class Recv(Proc):
    """One `multifd recv` on a unix socket in WORKDIR, output in files."""

    def __init__(self, mfd, work, tag, args, dl):
        self.path = os.path.join(work, tag + ".sock")
        uri = os.path.join(work, tag + ".uri")
        for f in (self.path, uri):
            if os.path.exists(f):
                os.unlink(f)
        Proc.__init__(self, [mfd, "recv", "--listen", "unix:" + self.path,
                             "--uri-file", uri] + args, work, tag)
        # --uri-file is written once recv listens.
        t0 = time.monotonic()
        while not (os.path.exists(uri) and os.path.getsize(uri)):
            if self.p.poll() is not None:
                raise Failed("%s: recv exited %d before listening: %s"
                             % (tag, self.p.returncode, self.stderr()))
            if time.monotonic() - t0 > dl.left(5):
                self.kill()
                raise Failed("%s: recv not listening after 5 s" % tag)
            time.sleep(0.01)

    def digest(self, block):
        """The XXH3-64 digest recv printed for block (--into anon:)."""
        with open(self.outf) as f:
            for line in f:
                w = line.split()
                if len(w) == 3 and w[0] == "digest" and w[1] == block:
                    return w[2]
        return None


class Src:
    """A source per PROTOCOL.md: the main channel, data channels, packets,
    and the totals COMPLETE reports."""

    def __init__(self, recv, dl, page_size=4096, channels=1, method=M_NONE,
                 features=0, blocks=(("ram0", 1 << 20),)):
        self.path = recv.path
        self.dl = dl
        self.ps = page_size
        self.ppp = 524288 // page_size
        self.nch = channels
        self.method = method
        self.features = features
        self.blocks = list(blocks)
        self.uuid = _uuid.uuid4().bytes
        self.num = 0
        self.normal = 0
        self.packets = 0
        self.iteration = 0
        self.m = None
        self.d = []

    def conn(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.dl.left())
        s.connect(self.path)
        return s

    def send(self, s, data):
        s.settimeout(self.dl.left())
        s.sendall(data)

    def rec(self, t, body=b""):
        self.send(self.m, rec(t, body))

    def read_rec(self, cap=None):
        """The next record from recv other than a HEARTBEAT (each read
        waiting cap seconds at most)."""
        while True:
            t, ln = struct.unpack(">II", recvall(self.m, 8, self.dl, cap))
            body = recvall(self.m, (ln + 7) & ~7, self.dl, cap)[:ln]
            if t != HEARTBEAT:
                return t, body

    def answer(self, cap=None):
        """recv's answer as text: "DONE", "ERROR <message>", or what came
        instead (a refusing recv closes its channels after ERROR, but the
        record stays readable)."""
        try:
            t, b = self.read_rec(cap)
        except (Failed, OSError, EOFError) as e:
            return "no answer (%s)" % e
        if t == ERROR and len(b) >= 4:
            return "ERROR " + b[4:].decode("utf-8", "replace")
        return "DONE" if t == DONE and not b else "record 0x%x %r" % (t, b[:80])

    def setup(self, connect=None):
        """Preamble, HELLO, BLOCKs, SETUP_END, READY, then `connect` data
        channels (default: all)."""
        self.m = self.conn()
        self.send(self.m, struct.pack(">II8x", MAIN_MAGIC, 1))
        recvall(self.m, 16, self.dl)
        self.rec(HELLO, self.uuid + struct.pack(
            ">IIIIiIQII", self.ps, self.ppp, self.nch, self.method, 1,
            ZPD_MULTIFD, self.features, len(self.blocks), 0))
        for i, (name, length) in enumerate(self.blocks):
            nb = name.encode()
            self.rec(BLOCK, struct.pack(">QII", length, i, len(nb)) + nb)
        self.rec(SETUP_END)
        t, b = self.read_rec()
        if t != READY:
            raise Failed("setup answered 0x%x, not READY: %r" % (t, b[:200]))
        for i in range(self.nch if connect is None else connect):
            d = self.conn()
            self.send(d, struct.pack(">II", DATA_MAGIC, 1) + self.uuid +
                      bytes([i]) + b"\0" * 39)
            self.d.append(d)

    def header(self, block, offs, size):
        """The header of a RAM packet listing normal pages at offs (counted
        in the totals), a payload of size bytes to follow."""
        self.num += 1
        self.normal += len(offs)
        self.packets += 1
        nm = block.encode()
        hdr = struct.pack(">IIIIIIQII", DATA_MAGIC, 1, self.method, self.ppp,
                          len(offs), size, self.num, 0, 0)
        hdr += b"\0" * 24 + nm + b"\0" * (256 - len(nm))
        hdr += b"".join(struct.pack(">Q", o) for o in offs)
        return hdr + b"\0" * (8 * (self.ppp - len(offs)))

    def packet(self, block, offs, payload):
        """A RAM packet: header and payload."""
        return self.header(block, offs, len(payload)) + payload

    def sync_packet(self):
        self.num += 1
        return (struct.pack(">IIIIIIQII", DATA_MAGIC, 1, 1, self.ppp, 0, 0,
                            self.num, 0, 0) + b"\0" * (24 + 256 + 8 * self.ppp))

    def end_pass(self, channels=None):
        """SYNC on the channels (default: all; [] for none: a pass whose
        channels never catch up), then ITERATION_END."""
        for d in self.d if channels is None else channels:
            self.send(d, self.sync_packet())
        self.iteration += 1
        self.rec(ITER_END, struct.pack(">Q", self.iteration))

    def complete(self):
        """DEVICE_STATE and COMPLETE after the last pass (the totals of
        the packets made); recv's answer (see answer())."""
        self.rec(DEVICE_STATE, struct.pack(">I", 1))
        self.rec(COMPLETE, struct.pack(">QQQ", self.normal, 0, self.packets))
        return self.answer()

    def checkpoint0(self):
        """COLO checkpoint 0 (no pages) until its CHECKPOINT_ACK."""
        self.rec(CKPT_BEGIN, struct.pack(">Q", 0))
        self.rec(CKPT_END, struct.pack(">Q", 0))
        t, b = self.read_rec()
        if t != CKPT_ACK or b != struct.pack(">Q", 0):
            raise Failed("checkpoint 0 answered 0x%x %r, not ACK 0" % (t, b[:200]))

    def close(self):
        for s in self.d + ([self.m] if self.m else []):
            s.close()


def expect_refused(recv, rc, answer, words, took=None):
    """recv refused cleanly: an ERROR record to the source, exit 1 and
    exactly one error line on stderr (as lib.sh's check_refused), both
    naming every one of words."""
    errs = recv.errors()
    if (rc != 1 or len(errs) != 1 or not answer.startswith("ERROR ") or
            not all(w in errs[0] and w in answer for w in words)):
        raise Failed("%s%s, answer %r, error lines %r; want ERROR, exit 1, "
                     "one error line, each with %r"
                     % (exit_name(rc), "" if took is None else
                        " after %.1f s" % took, answer, errs, words))


def reference_digest(mfd, work, tag, dl, pages, block=("ram0", 65536)):
    """The digest recv prints for a block holding `pages` ({offset: page}
    of 4 KiB, the rest zero), from a plain migration of exactly that
    content. XXH3-64 is not in Python's stdlib; this second run makes
    recv's own digest of known content the expected value, so the check
    does not depend on a digest pinned in the test or on xxhsum."""
    r = Recv(mfd, work, tag, ["--into", "anon:"], dl)
    try:
        s = Src(r, dl, blocks=[block])
        s.setup()
        for off in sorted(pages):
            s.send(s.d[0], s.packet(block[0], [off], pages[off]))
        s.end_pass()
        answer = s.complete()
        rc = r.wait(dl.left(5))
        s.close()
        if answer != "DONE" or rc != 0 or not r.digest(block[0]):
            raise Failed("reference run: answer %s, %s: %s"
                         % (answer, exit_name(rc), r.errors()))
        return r.digest(block[0])
    finally:
        r.kill()


def uffd_race(mfd, work, tag, dl, ps, size, nch=4):
    """Every page of one block on each of nch channels at once (the same
    offsets in the same order), then SYNC, ITERATION_END, COMPLETE."""
    r = Recv(mfd, work, tag, ["--into", "anon:"], dl)
    try:
        s = Src(r, dl, page_size=ps, channels=nch, blocks=[("ram0", size)])
        s.setup()
        payload = b"\x5a" * (ps * s.ppp)
        # Packet k lists pages k, k + npk, k + 2 npk, ...: no two adjacent,
        # so recv places each page with an ioctl of its own, and every page
        # (not every packet) is a chance for the channels to meet.
        npk = size // ps // s.ppp
        hdrs = [[s.header("ram0", [(j * npk + k) * ps for j in range(s.ppp)],
                          len(payload)) for k in range(npk)] for c in range(nch)]
        # The channels go in step, packet by packet: the fault needs two
        # placing the same fresh page at the same time, and channels that
        # drift apart only meet pages placed whole already. Four channels
        # make more pairs that may meet: with two, the old code outlived
        # the 8 KiB case in 6 runs of 20 on a busy machine; with four (and
        # 128 MiB), in none of 40, busy or idle.
        step = threading.Barrier(nch)
        sent = [0] * nch

        def run(c):
            try:
                for h in hdrs[c]:
                    step.wait(dl.left())
                    s.send(s.d[c], h)
                    s.send(s.d[c], payload)
                    sent[c] += 1
            except (OSError, threading.BrokenBarrierError, Failed):
                step.abort()  # recv gone or the case out of time: judged below

        ts = [threading.Thread(target=run, args=(c,)) for c in range(nch)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(dl.left())
        answer = "none: the packets were not all sent"
        if sent == [npk] * nch:
            try:
                s.end_pass()
                answer = s.complete()
            except OSError as e:
                answer = "none (%s)" % e
        rc = r.wait(dl.left(5))
        s.close()
        if rc is None:
            raise Failed("recv still running after the migration (answer %s)"
                         % answer)
        if rc < 0:
            raise Failed("recv %s after %s of %d packets a channel"
                         % (exit_name(rc), "+".join(map(str, sent)), npk))
        # A normal exit is all the fault is about; this source's migration
        # is valid, so it also completes.
        if rc != 0 or answer != "DONE":
            raise Failed("%s, answer %s, errors %r" % (exit_name(rc), answer,
                                                       r.errors()))
        return ("%d KiB pages, %d MiB on %d channels at once, completed"
                % (ps >> 10, size >> 20, nch))
    finally:
        r.kill()


def zstd_frame(wlog, size, byte):
    """The start of a zstd frame (RFC 8878) whose header asks for a
    2^wlog-byte window, then RLE blocks regenerating `size` bytes of
    `byte`, none of them last: the stream goes on, as a multifd channel's
    does. Frame header: magic, descriptor 0 (no content size, no checksum,
    no dictionary, a window descriptor follows), window descriptor
    (exponent wlog - 10, mantissa 0)."""
    out = struct.pack("<I", 0xFD2FB528) + bytes([0x00, (wlog - 10) << 3])
    bs = min(1 << 17, 1 << wlog)  # Block_Maximum_Size
    while size:
        n = min(bs, size)
        size -= n
        # Block header, 3 bytes little-endian: last 0, type 1 (RLE), size.
        out += struct.pack("<I", (n << 3) | (1 << 1))[:3] + bytes([byte])
    return out


def zstd_window(mfd, work, tag, dl, wlog):
    """One zstd packet of 128 pages of 0x77 in a frame asking for 2^wlog,
    then the rest of a valid migration."""
    want = None
    if wlog <= 25:
        want = reference_digest(mfd, work, tag + ".ref", dl,
                                {i * 4096: b"\x77" * 4096 for i in range(128)},
                                ("ram0", 1 << 20))
    r = Recv(mfd, work, tag, ["--into", "anon:"], dl)
    try:
        s = Src(r, dl, method=M_ZSTD, blocks=[("ram0", 1 << 20)])
        s.setup()
        try:
            s.send(s.d[0], s.packet("ram0", [i * 4096 for i in range(128)],
                                    zstd_frame(wlog, 128 * 4096, 0x77)))
            s.end_pass()
            answer = s.complete()
        except OSError:
            # Refused: recv closed its channels; its ERROR is waiting.
            answer = s.answer()
        rc = r.wait(dl.left(5))
        s.close()
        if want is None:
            expect_refused(r, rc, answer, ["window", "2^25"])
            return "2^%d refused" % wlog
        got = r.digest("ram0")
        if rc != 0 or answer != "DONE" or got != want:
            raise Failed("2^%d: %s, answer %s, digest %s (want %s), errors %r"
                         % (wlog, exit_name(rc), answer, got, want, r.errors()))
        return "2^%d decoded, digest %s" % (wlog, got)
    finally:
        r.kill()


def colo_complete(mfd, work, tag, dl):
    """A COLO session's first migration, then COMPLETE with no checkpoint."""
    r = Recv(mfd, work, tag, ["--into", "anon:", "--x-colo"], dl)
    try:
        s = Src(r, dl, features=FEAT_COLO, blocks=[("ram0", 65536)])
        s.setup()
        s.send(s.d[0], s.packet("ram0", [0], b"\xab" * 4096))
        s.end_pass()
        answer = s.complete()
        rc = r.wait(dl.left(5))
        s.close()
        expect_refused(r, rc, answer, ["COMPLETE", "checkpoint 0"])
        return "refused"
    finally:
        r.kill()


def missing_channel(mfd, work, tag, dl):
    """2 channels declared, 1 connected, the source then silent (its
    connections open); the options are the reproducer's: idle-timeout
    alone did not end the wait either."""
    r = Recv(mfd, work, tag, ["--into", "anon:", "--idle-timeout", "2000",
                              "--handshake-timeout", "1000"], dl)
    try:
        s = Src(r, dl, channels=2, blocks=[("ram0", 65536)])
        s.setup(connect=1)
        t0 = time.monotonic()
        # The answer within 4 s of READY, then the source closes (recv
        # lingers after ERROR until it does, half a second at most).
        answer = s.answer(cap=4)
        if not answer.startswith("ERROR") and r.p.poll() is None:
            raise Failed("no answer within 4 s of READY, recv still waiting")
        s.close()
        rc = r.wait(max(0.5, 4 - (time.monotonic() - t0)))
        took = time.monotonic() - t0
        expect_refused(r, rc, answer, ["data channels", "handshake-timeout"],
                       took)
        return "refused after %.1f s" % took
    finally:
        r.kill()


def colo_heartbeat(mfd, work, tag, dl, strays):
    """COLO: checkpoint 0 holds page 0 = 0xab, then the primary goes
    silent: with strays connecting every 300 ms, or (strays False) in the
    middle of checkpoint 1 (page 1 = 0xcd sent, its SYNC never) at its
    ITERATION_END. The secondary promotes checkpoint 0 within 2.5 s:
    exit 0, the heartbeat timeout named, the digest checkpoint 0's."""
    want = reference_digest(mfd, work, tag + ".ref", dl, {0: b"\xab" * 4096})
    r = Recv(mfd, work, tag, ["--into", "anon:", "--x-colo",
                              "--heartbeat-timeout", "1000",
                              "--idle-timeout", "8000"], dl)
    try:
        s = Src(r, dl, features=FEAT_COLO, blocks=[("ram0", 65536)])
        s.setup()
        s.send(s.d[0], s.packet("ram0", [0], b"\xab" * 4096))
        s.end_pass()
        s.rec(DEVICE_STATE, struct.pack(">I", 1))
        s.checkpoint0()
        if not strays:
            s.rec(CKPT_BEGIN, struct.pack(">Q", 1))
            s.send(s.d[0], s.packet("ram0", [4096], b"\xcd" * 4096))
            s.end_pass(channels=[])
        # From here the primary sends nothing; the heartbeat timeout runs
        # from its last record. The old code promoted only at idle-timeout
        # (8 s): wait up to 10 s to tell the two apart.
        t0 = time.monotonic()
        rc = None
        while rc is None and time.monotonic() - t0 < 10:
            if strays:
                try:
                    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    c.settimeout(dl.left(1))
                    c.connect(r.path)
                    c.close()
                except OSError:
                    pass  # recv may be gone already
            rc = r.wait(dl.left(0.3))
        took = time.monotonic() - t0
        s.close()
        got = r.digest("ram0")
        err = r.stderr()
        if (rc != 0 or took >= 2.5 or got != want or
                "heartbeat-timeout" not in err or "promoted" not in err):
            raise Failed("%s after %.1f s (want exit 0 within 2.5 s), digest "
                         "%s (want checkpoint 0's %s), errors %r"
                         % (exit_name(rc), took, got, want, r.errors()))
        return "promoted checkpoint 0 after %.1f s" % took
    finally:
        r.kill()


CASES = {
    "uffd-race-4k": lambda m, w, t, dl: uffd_race(m, w, t, dl, 4096, 32 << 20),
    "uffd-race-8k": lambda m, w, t, dl: uffd_race(m, w, t, dl, 8192, 128 << 20),
    "uffd-race-64k": lambda m, w, t, dl: uffd_race(m, w, t, dl, 65536, 128 << 20),
    "zstd-window-27": lambda m, w, t, dl: zstd_window(m, w, t, dl, 27),
    "zstd-window-25": lambda m, w, t, dl: zstd_window(m, w, t, dl, 25),
    "colo-complete-before-ckpt0": colo_complete,
    "missing-channel": missing_channel,
    "colo-hb-strays": lambda m, w, t, dl: colo_heartbeat(m, w, t, dl, True),
    "colo-hb-iteration-end":
        lambda m, w, t, dl: colo_heartbeat(m, w, t, dl, False),
}


def main():
    return run_case(CASES, "CASE MULTIFD WORKDIR", CASE_SECS)


if __name__ == "__main__":
    sys.exit(main())
