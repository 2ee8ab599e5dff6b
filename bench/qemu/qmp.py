"""A small QMP client (Python standard library only).

    with QMP("/tmp/qmp.sock") as q:          # connects, negotiates
        q.cmd("migrate-set-capabilities", capabilities=[...])
        status = q.cmd("query-migrate")["status"]

cmd() returns the command's "return" value and raises QMPError on an
"error" answer. Asynchronous events that arrive meanwhile are kept in
.events. Command-line use: python3 qmp.py SOCKET COMMAND [JSON-ARGS].
"""
import json
import socket
import sys
import time


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, timeout=30.0, connect_timeout=10.0):
        self.path = path
        self.events = []
        self.greeting = None
        deadline = time.monotonic() + connect_timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise QMPError(f"cannot connect to QMP socket {path}")
                time.sleep(0.02)
        s.settimeout(timeout)
        self.sock = s
        self.rfile = s.makefile("r", encoding="utf-8")
        self.greeting = self._read()
        if "QMP" not in self.greeting:
            raise QMPError(f"unexpected QMP greeting: {self.greeting}")
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.rfile.readline()
        if not line:
            raise QMPError(f"QMP connection {self.path} closed")
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall((json.dumps(msg) + "\n").encode())
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise QMPError(f"{name}: {r['error'].get('class')}: "
                               f"{r['error'].get('desc')}")
            return r.get("return")

    def version(self):
        v = self.greeting["QMP"]["version"]["qemu"]
        return f"{v['major']}.{v['minor']}.{v['micro']}"

    def close(self):
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: qmp.py SOCKET COMMAND [JSON-ARGS]")
    with QMP(sys.argv[1]) as q:
        a = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
        print(json.dumps(q.cmd(sys.argv[2], **a), indent=2))
