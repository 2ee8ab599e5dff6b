#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, recorded from real streams.

Runs real migrations (`multifd send` to `multifd recv`, each verified by
the destination's exit status) through a recording TCP proxy, once per
method (none, zlib, zstd, lz4), on a small guest of mixed pages (text,
random, zero, sparse). From the bytes each source connection sent it writes:

  main/real-METHOD        the main channel as the source wrote it
  wire/preamble           selector 0 + the main channel's preamble
  wire/hello              selector 1 + the HELLO record's body
  wire/packet-METHOD      selector 2 + a data channel's first RAM packet
  wire/stream-METHOD-ID   selector 3..5 + data channel ID's packets in the
                          format fuzz/fuzz_wire.c reads: u8 pages - 1,
                          u24 payload length (little-endian), payload

Usage: fuzz_seeds.py MULTIFD CORPUS-DIR
"""
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

MAIN_MAGIC = 0x4D464443
DATA_MAGIC = 0x11223344
PAGE = 4096
PPP = 128
PKT_LEN = 320 + 8 * PPP
SELECTOR = {"zlib": 3, "zstd": 4, "lz4": 5}


def guest(path):
    """256 pages: text-like, random, zero and sparse pages, interleaved."""
    rnd = random.Random(7)
    words = [b"migration", b"page", b"channel", b"dirty", b"zero", b"block",
             b"the", b"of", b"memory", b"checkpoint", b"\n", b"0x7f3a"]
    out = bytearray()
    for i in range(256):
        kind = i % 4
        if kind == 0:
            p = bytearray()
            while len(p) < PAGE:
                p += rnd.choice(words) + b" "
            out += p[:PAGE]
        elif kind == 1:
            out += rnd.randbytes(PAGE)
        elif kind == 2:
            out += bytes(PAGE)
        else:
            p = bytearray(PAGE)
            p[rnd.randrange(PAGE)] = 1 + rnd.randrange(255)
            out += p
    with open(path, "wb") as f:
        f.write(out)


class Recorder:
    """A TCP proxy that keeps what each client connection sent."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.streams = []
        self.threads = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(self.upstream)
            rec = bytearray()
            self.streams.append(rec)
            for a, b, keep in ((c, u, rec), (u, c, None)):
                t = threading.Thread(target=self.pump, args=(a, b, keep))
                t.start()
                self.threads.append(t)

    @staticmethod
    def pump(a, b, keep):
        while True:
            try:
                d = a.recv(1 << 16)
            except OSError:
                d = b""
            if not d:
                try:
                    b.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if keep is not None:
                keep += d
            b.sendall(d)

    def close(self):
        self.lsock.close()
        for t in self.threads:
            t.join(timeout=10)


def migrate(multifd, method, blk, tmp):
    uri_file = os.path.join(tmp, "uri")
    if os.path.exists(uri_file):
        os.unlink(uri_file)
    log = open(os.path.join(tmp, "recv.log"), "w+")
    recv = subprocess.Popen([multifd, "recv", "--listen", "tcp:127.0.0.1:0",
                             "--into", "anon:", "--uri-file", uri_file],
                            stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(200):
        if os.path.exists(uri_file) and open(uri_file).read().strip():
            break
        time.sleep(0.05)
    host, port = open(uri_file).read().strip().split(":")[1:]
    rec = Recorder((host, int(port)))
    send = subprocess.run([multifd, "send", "--to",
                           "tcp:127.0.0.1:%d" % rec.port, "--channels", "2",
                           "--verify", "--crc", "--multifd-compression",
                           method, blk], stdout=subprocess.DEVNULL)
    rc = recv.wait(timeout=60)
    rec.close()
    if send.returncode or rc:
        log.seek(0)
        sys.stderr.write(log.read())
        sys.exit("fuzz_seeds: the %s migration failed (send %d, recv %d)"
                 % (method, send.returncode, rc))
    return [bytes(s) for s in rec.streams]


def records(main):
    """(type, body) of each main-channel record after the preamble."""
    pos = 16
    while pos + 8 <= len(main):
        t, n = struct.unpack_from(">II", main, pos)
        yield t, main[pos + 8:pos + 8 + n]
        pos += 8 + n + (-n % 8)


def packets(data):
    """(header, payload) of each RAM packet after the init message."""
    pos = 64
    while pos + PKT_LEN <= len(data):
        hdr = data[pos:pos + PKT_LEN]
        size = struct.unpack_from(">I", hdr, 20)[0]
        yield hdr, data[pos + PKT_LEN:pos + PKT_LEN + size]
        pos += PKT_LEN + size


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    multifd, corpus = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        blk = os.path.join(tmp, "ram")
        guest(blk)
        for method in ("none", "zlib", "zstd", "lz4"):
            streams = migrate(multifd, method, blk, tmp)
            for s in streams:
                magic, = struct.unpack_from(">I", s, 0) if len(s) >= 4 else (0,)
                if magic == MAIN_MAGIC:
                    write(f"{corpus}/main/real-{method}", s)
                    write(f"{corpus}/wire/preamble", b"\0" + s[:16])
                    for t, body in records(s):
                        if t == 1:
                            write(f"{corpus}/wire/hello", b"\1" + body)
                elif magic == DATA_MAGIC:
                    cid = s[24]
                    pk = [p for p in packets(s) if struct.unpack_from(
                        ">I", p[0], 16)[0]]
                    if pk:
                        write(f"{corpus}/wire/packet-{method}", b"\2" + pk[0][0])
                    if method in SELECTOR and pk:
                        out = bytearray([SELECTOR[method]])
                        for hdr, payload in pk:
                            normal = struct.unpack_from(">I", hdr, 16)[0]
                            out += bytes([normal - 1])
                            out += len(payload).to_bytes(3, "little") + payload
                        write(f"{corpus}/wire/stream-{method}-{cid}", out)
    print("fuzz_seeds: recorded main and data streams of 4 migrations into",
          corpus)


if __name__ == "__main__":
    main()
