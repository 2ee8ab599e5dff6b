#!/usr/bin/env python3
"""A TLS proxy that cuts the source's byte stream into records of other
sizes: each connection from a `multifd send` (TLS server side, SRV's
certificate) is carried to the destination at DEST (TLS client side, CLI's
certificate) with every write a record of a random size from 1 to 20000
bytes (one record, or two past 16 KiB), so records start and end anywhere
in packet headers and pages, as an independent peer's may. The bytes
themselves are unchanged. The destination's answers go back as they come.

Usage: tls_reframe.py SRV-DIR CLI-DIR DEST-HOST:PORT PORT-FILE SEED
Runs until killed; prints the number of records written at each close.
"""
import os
import random
import select
import socket
import ssl
import sys
import threading


def read(s):
    """What s has for us now, read without blocking until nothing is left
    (OpenSSL may hold a whole further record that select() cannot see):
    bytes, None when only non-application records came, b"" once closed."""
    out = []
    s.setblocking(False)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return b"".join(out) or b""
            out.append(d)
    except (ssl.SSLWantReadError, BlockingIOError):
        pass
    except (ssl.SSLZeroReturnError, ConnectionResetError):
        return b"".join(out) or b""
    finally:
        s.setblocking(True)
    return b"".join(out) or None


def relay(down, up, rnd):
    """Carries down -> up in writes of random sizes and up -> down as it
    comes, on one thread (an SSL object is not to be read and written from
    two). What is buffered goes out early only when down has nothing more
    ready within 2 ms. Returns the number of records written upstream."""
    buf = b""
    want = rnd.randint(1, 20000)
    records = 0
    open_down = True
    while True:
        # Both are read each time (without blocking): OpenSSL may hold
        # records select() cannot see, from the handshake on.
        rl = [up] + ([down] if open_down else [])
        select.select(rl, [], [], 0.002 if buf else 0.05)
        data = read(up)
        if data == b"":
            return records
        if data:
            down.sendall(data)
        data = read(down) if open_down else None
        if data is not None:
            if data == b"":
                open_down = False
                if buf:
                    up.sendall(buf)
                    records += 1
                    buf = b""
                try:
                    up.unwrap()  # close_notify, as the source sent it
                except (OSError, ssl.SSLError):
                    return records
            elif data:
                buf += data
                while len(buf) >= want:
                    up.sendall(buf[:want])
                    buf = buf[want:]
                    records += 1
                    want = rnd.randint(1, 20000)
        elif buf:
            up.sendall(buf)  # nothing more is coming for now
            records += 1
            buf = b""
            want = rnd.randint(1, 20000)


def serve(conn, srv_ctx, cli_ctx, dest, seed):
    try:
        down = srv_ctx.wrap_socket(conn, server_side=True)
        raw = socket.create_connection(dest, timeout=30)
        raw.settimeout(None)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = cli_ctx.wrap_socket(raw)
    except (OSError, ssl.SSLError) as e:
        print(f"tls_reframe: connection failed: {e}", file=sys.stderr, flush=True)
        conn.close()
        return
    try:
        n = relay(down, up, random.Random(seed))
        print(f"tls_reframe: {n} records written", flush=True)
    except (OSError, ssl.SSLError) as e:
        print(f"tls_reframe: relay ended: {e}", file=sys.stderr, flush=True)
    up.close()
    down.close()


def main():
    srv, cli, dest, port_file, seed = sys.argv[1:6]
    host, port = dest.rsplit(":", 1)
    srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv_ctx.load_cert_chain(f"{srv}/server-cert.pem", f"{srv}/server-key.pem")
    cli_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cli_ctx.check_hostname = False
    cli_ctx.load_verify_locations(f"{cli}/ca-cert.pem")
    cli_ctx.load_cert_chain(f"{cli}/client-cert.pem", f"{cli}/client-key.pem")
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    n = 0
    while True:
        conn, _ = ls.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        n += 1
        threading.Thread(target=serve, daemon=True,
                         args=(conn, srv_ctx, cli_ctx, (host, int(port)),
                               int(seed) * 1000 + n)).start()


if __name__ == "__main__":
    main()
