#!/usr/bin/env python3
"""Side-by-side benchmark: multifd vs QEMU's own multifd migration.

Driven by bench/qemu/bench-qemu.sh, which installs/locates the QEMU peers.
Per case (content x method x channels x destination), runs interleave
QEMU peer(s) and multifd, each migrating the same content file (a paused
guest's RAM on /dev/shm) over loopback TCP, every run verified by digest.
Writes a Markdown table and a gnuplot PNG. Exits 1 if any migration
failed or any destination's memory differed from the source.
Standard library only.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import QMP, QMPError  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20
RUN = 2 * MiB  # interleave unit of the "half" content


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def parse_size(s):
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def xxh3(path):
    out = subprocess.run(["xxhsum", "-H3", path], check=True,
                         capture_output=True, text=True).stdout
    # "XXH3 (path) = 0123abcd..." (BSD style) or "digest  path" (GNU style)
    if "=" in out:
        return out.rsplit("=", 1)[1].strip()
    return out.split()[0]


# ---------------------------------------------------------------- contents

def text_corpus():
    """Real text from Debian packages: the common licenses (base-files)."""
    parts = []
    for p in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(p) and not os.path.islink(p):
            with open(p, "rb") as f:
                parts.append(f.read())
    data = b"".join(parts)
    if len(data) < 64 * 1024:
        raise SystemExit("text corpus /usr/share/common-licenses too small")
    return data


GUEST = {"note": ""}


def make_content(kind, path, size):
    chunk = 16 * MiB
    if kind == "guest":
        # a real guest's RAM: Debian's kernel and a workload, booted under
        # TCG by realguest.sh (cached); its statistics go to the table's notes
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run(["bash", os.path.join(here, "realguest.sh"), path,
                        f"{size // MiB}M"], check=True)
        if os.path.getsize(path) != size:
            raise SystemExit(f"realguest.sh made {os.path.getsize(path)} "
                             f"bytes, not {size}")
        zero = pages = 0
        zpage = bytes(4096)
        with open(path, "rb") as f:
            while True:
                b = f.read(chunk)
                if not b:
                    break
                for o in range(0, len(b), 4096):
                    pages += 1
                    zero += b[o:o + 4096] == zpage
        GUEST["note"] = (f"; {100 * zero / pages:.0f}% of its {pages} pages "
                         f"zero")
        return
    with open(path, "wb") as f:
        if kind == "zero":
            os.posix_fallocate(f.fileno(), 0, size)  # allocated, zero pages
            return
        if kind == "text":
            corpus = text_corpus()
            buf = corpus * (chunk // len(corpus) + 2)
        done = 0
        while done < size:
            n = min(chunk, size - done)
            if kind == "random":
                f.write(os.urandom(n))
            elif kind == "half":
                # 2 MiB runs: zero, random, zero, random ...
                b = bytearray(n)
                for off in range(0, n, RUN):
                    if ((done + off) // RUN) % 2 == 1:
                        b[off:off + RUN] = os.urandom(min(RUN, n - off))
                f.write(b)
            elif kind == "text":
                # keep the repetition continuous across chunks
                o = done % len(corpus)
                f.write(buf[o:o + n])
            else:
                raise SystemExit(f"unknown content {kind}")
            done += n


# ---------------------------------------------------------------- process stats

def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stop(p, timeout=10):
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


class RunFailed(Exception):
    pass


# ---------------------------------------------------------------- QEMU runs

class Peer:
    def __init__(self, name, cmd):
        self.name = name
        self.cmd = shlex.split(cmd)
        self.version = subprocess.run(self.cmd + ["--version"], check=True,
                                      capture_output=True, text=True
                                      ).stdout.splitlines()[0]


# The x509 directory when every migration runs over TLS (--tls).
TLS = {"dir": ""}


def qemu_run(peer, accel, work, src_file, size, method, channels, dest, digest):
    ss, ds = os.path.join(work, "src.qmp"), os.path.join(work, "dst.qmp")
    for p in (ss, ds):
        if os.path.exists(p):
            os.unlink(p)
    common = peer.cmd + ["-nodefaults", "-display", "none", "-S",
                         "-accel", accel, "-machine", "none,memory-backend=ram"]
    src_args = common + [
        "-object", f"memory-backend-file,id=ram,size={size},"
                   f"mem-path={src_file},share=on",
        "-qmp", f"unix:{ss},server=on,wait=off"]
    dst_file = os.path.join(work, "qemu-dst.ram")
    if dest == "tmpfs":
        if os.path.exists(dst_file):
            os.unlink(dst_file)
        mem = (f"memory-backend-file,id=ram,size={size},"
               f"mem-path={dst_file},share=on")
    else:
        mem = f"memory-backend-ram,id=ram,size={size}"
        if dest == "prealloc":
            mem += ",prealloc=on"
    dst_args = common + ["-object", mem, "-incoming", "defer",
                         "-qmp", f"unix:{ds},server=on,wait=off"]
    if TLS["dir"]:
        # QEMU's tls-creds-x509 on the same directory multifd uses.
        for args, end in ((src_args, "client"), (dst_args, "server")):
            args += ["-object", f"tls-creds-x509,id=tls0,dir={TLS['dir']},"
                                f"endpoint={end}"]
    slog = open(os.path.join(work, "qemu-src.log"), "w")
    dlog = open(os.path.join(work, "qemu-dst.log"), "w")
    src = dst = None
    qs = qd = None
    try:
        src = subprocess.Popen(src_args, stdin=subprocess.DEVNULL,
                               stdout=slog, stderr=subprocess.STDOUT)
        dst = subprocess.Popen(dst_args, stdin=subprocess.DEVNULL,
                               stdout=dlog, stderr=subprocess.STDOUT)
        try:
            qs = QMP(ss, timeout=600, connect_timeout=60)
            qd = QMP(ds, timeout=600, connect_timeout=120)
        except QMPError as e:
            raise RunFailed(f"{peer.name} did not start: {e}; "
                            f"see {work}/qemu-*.log")
        caps = [{"capability": "multifd", "state": True}]
        params = {"multifd-channels": channels,
                  "multifd-compression": method,
                  "max-bandwidth": 1 << 40,       # default caps it (128 MiB/s)
                  "downtime-limit": 100000}        # ms; paused guest anyway
        if TLS["dir"]:
            params["tls-creds"] = "tls0"
        for q in (qs, qd):
            q.cmd("migrate-set-capabilities", capabilities=caps)
            q.cmd("migrate-set-parameters", **params)
        if TLS["dir"]:
            qs.cmd("migrate-set-parameters", **{"tls-hostname": "localhost"})
        uri = f"tcp:127.0.0.1:{free_port()}"
        qd.cmd("migrate-incoming", uri=uri)
        t0 = time.monotonic()
        qs.cmd("migrate", uri=uri)
        deadline = t0 + 3600
        while True:
            info = qs.cmd("query-migrate")
            st = info.get("status")
            if st in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                raise RunFailed(f"{peer.name}: migration timed out ({st})")
            time.sleep(0.005)
        wall = time.monotonic() - t0
        if st != "completed":
            raise RunFailed(f"{peer.name}: source status {st}: "
                            f"{info.get('error-desc', '')}")
        while True:
            dinfo = qd.cmd("query-migrate")
            dst_st = dinfo.get("status")
            if dst_st in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() > deadline or dst.poll() is not None:
                raise RunFailed(f"{peer.name}: destination status {dst_st}")
            time.sleep(0.005)
        if dst_st != "completed":
            raise RunFailed(f"{peer.name}: destination status {dst_st}")
        cpu_src, cpu_dst = proc_cpu(src.pid), proc_cpu(dst.pid)
        rss = proc_hwm_kib(dst.pid)
        # verification: the destination's guest memory
        if dest == "tmpfs":
            got = xxh3(dst_file)
        else:
            pm = os.path.join(work, "pmemsave.bin")
            qd.cmd("pmemsave", val=0, size=size, filename=pm)
            got = xxh3(pm)
            os.unlink(pm)
        if got != digest:
            raise RunFailed(f"{peer.name}: destination memory differs "
                            f"(XXH3 {got}, source {digest})")
        total_ms = info.get("total-time") or int(wall * 1000)
        return {"seconds": total_ms / 1000.0, "wall": wall,
                "transferred": info.get("ram", {}).get("transferred", 0),
                "cpu_src": cpu_src, "cpu_dst": cpu_dst, "rss_kib": rss}
    finally:
        for q in (qs, qd):
            if q:
                try:
                    q.cmd("quit")
                except Exception:
                    pass
                q.close()
        stop(src)
        stop(dst)
        slog.close()
        dlog.close()
        if os.path.exists(dst_file):
            os.unlink(dst_file)


# ---------------------------------------------------------------- multifd runs

def wait4(p):
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru


def multifd_run(binary, work, src_file, size, method, channels, dest, digest):
    uf = os.path.join(work, "uri")
    if os.path.exists(uf):
        os.unlink(uf)
    into_dir = os.path.join(work, "mfd-dst")
    shutil.rmtree(into_dir, ignore_errors=True)
    rargs = [binary, "recv", "--listen", "tcp:127.0.0.1:0", "--uri-file", uf,
             "--json"]
    tls = ["--tls-creds", TLS["dir"]] if TLS["dir"] else []
    rargs += tls
    if dest == "tmpfs":
        os.mkdir(into_dir)
        rargs += ["--into", into_dir]
    else:
        rargs += ["--into", "anon:"]
        if dest == "prealloc":
            # As QEMU's prealloc=on: the memory exists, populated, before
            # the source connects (the block is named after the file).
            rargs += ["--prealloc", "--block",
                      f"{os.path.basename(src_file)}={os.path.getsize(src_file)}"]
    rout = open(os.path.join(work, "recv.json"), "w+")
    rerr = open(os.path.join(work, "recv.log"), "w+")
    sout = open(os.path.join(work, "send.json"), "w+")
    serr = open(os.path.join(work, "send.log"), "w+")
    recv = send = None
    try:
        recv = subprocess.Popen(rargs, stdin=subprocess.DEVNULL, stdout=rout,
                                stderr=rerr)
        deadline = time.monotonic() + 120
        while not (os.path.exists(uf) and open(uf).read().strip()):
            if recv.poll() is not None or time.monotonic() > deadline:
                raise RunFailed(f"multifd recv did not start; see {work}/recv.log")
            time.sleep(0.01)
        uri = open(uf).read().strip()
        send = subprocess.Popen(
            [binary, "send", "--to", uri, "--channels", str(channels),
             "--multifd-compression", method, "--json"] + tls + [src_file],
            stdin=subprocess.DEVNULL, stdout=sout, stderr=serr)
        ru_s = wait4(send)
        ru_r = wait4(recv)
        if send.returncode != 0 or recv.returncode != 0:
            raise RunFailed(f"multifd failed: send rc {send.returncode}, "
                            f"recv rc {recv.returncode}; see {work}/send.log, "
                            f"{work}/recv.log")
        sout.seek(0)
        rout.seek(0)
        sj, rj = json.load(sout), json.load(rout)
        if sj.get("status") != "completed" or rj.get("status") != "completed":
            raise RunFailed(f"multifd status {sj.get('status')}/{rj.get('status')}")
        name = os.path.basename(src_file)
        if dest == "tmpfs":
            got = xxh3(os.path.join(into_dir, name))
        else:
            got = rj.get("digests", {}).get(name)
        if got != digest:
            raise RunFailed(f"multifd: destination memory differs "
                            f"(XXH3 {got}, source {digest})")
        return {"seconds": sj["total_time_us"] / 1e6,
                "transferred": sj.get("data_bytes", 0) + sj.get("main_bytes", 0),
                "cpu_src": ru_s.ru_utime + ru_s.ru_stime,
                "cpu_dst": ru_r.ru_utime + ru_r.ru_stime,
                "rss_kib": ru_r.ru_maxrss}
    finally:
        stop(send)
        stop(recv)
        for f in (rout, rerr, sout, serr):
            f.close()
        shutil.rmtree(into_dir, ignore_errors=True)


# ---------------------------------------------------------------- main

def kvm_usable():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        return True
    except OSError:
        return False


def med(v):
    return statistics.median(v) if v else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--multifd", required=True)
    ap.add_argument("--peer", action="append", default=[],
                    help="NAME=COMMAND (QEMU binary and options, e.g. -L)")
    ap.add_argument("--missing", action="append", default=[],
                    help="NAME=REASON: a peer that could not be set up")
    ap.add_argument("--size", default="4G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--contents", default="zero random half text")
    ap.add_argument("--methods", default="none zlib zstd")
    ap.add_argument("--channels", default="1 2 4")
    ap.add_argument("--dests", default="anon prealloc tmpfs",
                    help="destination kinds (anon is run for every case)")
    ap.add_argument("--extra-dest-filter", default="none:2",
                    help="METHOD:CHANNELS cases that also get the non-anon "
                         "destinations ('all' for every case)")
    ap.add_argument("--work", default="/dev/shm/multifd-bench-qemu")
    ap.add_argument("--md", default="docs/benchmarks/qemu.md")
    ap.add_argument("--png", default="docs/benchmarks/qemu.png")
    ap.add_argument("--label", default="")
    ap.add_argument("--tls", default="",
                    help="an x509 directory (QEMU's layout, both roles' "
                         "files): every migration of both tools over TLS")
    ap.add_argument("--results", default="",
                    help="JSON lines file: each finished case's rows are "
                         "appended to it, and the table is rewritten after "
                         "every case")
    ap.add_argument("--resume", action="store_true",
                    help="keep the cases already in --results (same size) "
                         "and run only the others")
    a = ap.parse_args()
    TLS["dir"] = a.tls

    size = parse_size(a.size)
    peers = []
    missing = [m.split("=", 1) for m in a.missing]
    for spec in a.peer:
        name, cmd = spec.split("=", 1)
        try:
            peers.append(Peer(name, cmd))
        except (OSError, subprocess.CalledProcessError) as e:
            log(f"PEER UNAVAILABLE: {name}: {e}")
            missing.append([name, str(e)])
    accel = "kvm" if kvm_usable() else "tcg"
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    failures = []
    rows = []  # dicts: case keys + tool + medians
    mfd_name = "multifd"

    def extra_ok(m, ch):
        if a.extra_dest_filter == "all":
            return True
        fm, fch = a.extra_dest_filter.split(":")
        return m == fm and str(ch) == fch

    def all_cases(content):
        for method in a.methods.split():
            for ch in [int(c) for c in a.channels.split()]:
                for dest in a.dests.split():
                    if dest == "anon" or extra_ok(method, ch):
                        yield method, ch, dest

    # Cases kept from an earlier, interrupted run (--resume).
    done = set()
    elapsed0 = 0.0
    if a.results and a.resume and os.path.exists(a.results):
        for line in open(a.results):
            r = json.loads(line)
            if r.get("size") != size:
                continue
            if "guest_note" in r:
                GUEST["note"] = r["guest_note"]
                continue
            if "elapsed" in r:
                elapsed0 += r["elapsed"]
                continue
            rows.append(r)
            done.add((r["content"], r["method"], r["channels"], r["dest"]))
        log(f"resuming: {len(done)} cases from {a.results}")
    elif a.results:
        open(a.results, "w").close()
    ncases = sum(1 for c in a.contents.split() for _ in all_cases(c))

    def record(obj):
        if a.results:
            with open(a.results, "a") as f:
                f.write(json.dumps(dict(obj, size=size)) + "\n")

    def publish():
        """The table and chart as they stand, after every case."""
        def pos(v, order):
            order = [str(x) for x in order.split()]
            return order.index(str(v)) if str(v) in order else len(order)
        rows.sort(key=lambda r: (pos(r["content"], a.contents),
                                 pos(r["method"], a.methods),
                                 pos(r["channels"], a.channels),
                                 pos(r["dest"], a.dests)))
        n = len(done)
        a.progress = "" if n == ncases else (
            f"**Partial: {n} of {ncases} cases measured so far** "
            f"(the run goes on, or resumes with RESUME=1). ")
        write_md(a, size, peers, missing, accel, rows, failures,
                 elapsed0 + time.monotonic() - t_start)
        write_png(a, size, peers, rows)

    t_start = time.monotonic()
    for content in a.contents.split():
        todo = [c for c in all_cases(content)
                if (content,) + c not in done]
        if not todo:
            continue
        src_file = os.path.join(a.work, f"{content}.ram")
        log(f"== content {content}: writing {size} bytes to {src_file}")
        make_content(content, src_file, size)
        if content == "guest":
            record({"guest_note": GUEST["note"]})
        digest = xxh3(src_file)
        for method, ch, dest in todo:
            res = {p.name: [] for p in peers}
            res[mfd_name] = []
            failed = {}
            for r in range(a.runs):
                order = []
                for p in peers:  # QEMU, multifd, QEMU, multifd ...
                    order += [p, None]
                if not peers:
                    order = [None]
                for tool in order:
                    name = tool.name if tool else mfd_name
                    if name in failed:
                        continue
                    tag = f"{content}/{method}/{ch}ch/{dest} run {r + 1} {name}"
                    try:
                        if tool:
                            out = qemu_run(tool, accel, a.work, src_file,
                                           size, method, ch, dest, digest)
                        else:
                            out = multifd_run(a.multifd, a.work, src_file,
                                              size, method, ch, dest, digest)
                    except (RunFailed, QMPError, OSError,
                            ValueError, KeyError) as e:
                        msg = f"{tag}: FAILED: {e}"
                        log(msg)
                        failures.append(msg)
                        failed[name] = str(e)
                        continue
                    res[name].append(out)
                    log(f"{tag}: {size / out['seconds'] / 1e9:.2f} GB/s "
                        f"({out['seconds']:.3f} s), cpu src "
                        f"{out['cpu_src']:.2f} s dst {out['cpu_dst']:.2f} s, "
                        f"dst rss {out['rss_kib'] // 1024} MiB")
            mfd_gbs = med([size / o["seconds"] / 1e9 for o in res[mfd_name]])
            for name in [mfd_name] + [p.name for p in peers]:
                v = res[name]
                gbs = med([size / o["seconds"] / 1e9 for o in v])
                rows.append({
                    "content": content, "method": method, "channels": ch,
                    "dest": dest, "tool": name, "n": len(v),
                    "failed": failed.get(name),
                    "gbs": gbs,
                    "ratio": (mfd_gbs / gbs) if name != mfd_name and v
                             and res[mfd_name] else None,
                    "transferred": med([o["transferred"] for o in v]),
                    "cpu_src": med([o["cpu_src"] for o in v]),
                    "cpu_dst": med([o["cpu_dst"] for o in v]),
                    "rss": med([o["rss_kib"] for o in v]) / 1024,
                })
                record(rows[-1])
            done.add((content, method, ch, dest))
            publish()
        os.unlink(src_file)
    record({"elapsed": time.monotonic() - t_start})
    shutil.rmtree(a.work, ignore_errors=True)
    publish()
    if failures:
        log(f"{len(failures)} run(s) FAILED or differed:")
        for f in failures:
            log("  " + f)
        return 1
    return 0


def fmt(v, f="%.2f"):
    if v is None or v != v:
        return "-"
    return f % v


def write_md(a, size, peers, missing, accel, rows, failures, elapsed):
    guest_note = GUEST["note"]
    os.makedirs(os.path.dirname(a.md) or ".", exist_ok=True)
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    L = []
    L.append("# multifd vs QEMU: migrating a paused guest's memory\n")
    L.append(f"Generated by `bench/qemu/bench-qemu.sh` "
             f"({a.label or 'full'}) on "
             f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; "
             f"{elapsed / 60:.1f} min. Do not edit by hand. "
             f"{getattr(a, 'progress', '')}\n")
    L.append(f"- Machine: {os.cpu_count()} CPUs ({cpu}), "
             f"Linux {platform.release()}, QEMU accelerator: {accel}.")
    for p in peers:
        L.append(f"- Peer **{p.name}**: `{p.version}` "
                 f"(`{' '.join(p.cmd)}`).")
    for name, why in missing:
        L.append(f"- Peer **{name}**: NOT RUN, {why}.")
    L.append(f"- Guest memory: {size / (1 << 30):g} GiB, one content file on "
             f"/dev/shm. QEMU source: `-machine none,memory-backend=ram` with "
             f"`memory-backend-file,share=on` on that file, paused (`-S`); "
             f"QEMU destination: `-incoming defer`, fresh "
             f"`memory-backend-ram` (anon), the same with `prealloc=on` "
             f"(prealloc), or a fresh `memory-backend-file,share=on` on "
             f"/dev/shm (tmpfs). multifd: `multifd send --json FILE` to "
             f"`multifd recv --into anon:` (prealloc: with `--prealloc --block "
             f"NAME=SIZE`, populated before the source connects) or `--into DIR` on "
             f"/dev/shm (tmpfs).")
    if TLS["dir"]:
        L.append("- **TLS on every channel**: x509 (RSA-3072 keys made by "
                 "`certtool`, client certificates verified), QEMU's "
                 "`tls-creds-x509` with `tls-hostname` against multifd's "
                 "`--tls-creds` on the same directory.")
    L.append(f"- Both: loopback TCP, multifd capability, `multifd-channels` "
             f"and `multifd-compression` as listed, default compression "
             f"levels (zlib 1, zstd 1), QEMU `max-bandwidth` 1 TiB/s and "
             f"`downtime-limit` 100 s (a paused guest: one pass).")
    L.append(f"- GB/s = guest memory bytes / migration time, GB = 10^9 bytes; "
             f"time is QEMU's `total-time` from `query-migrate` on the source "
             f"(ms resolution) and multifd's `total_time_us` from `send --json`. "
             f"Median of {a.runs} rounds; a round runs each QEMU peer with a "
             f"multifd run after each (QEMU, multifd, QEMU, multifd ...), so "
             f"multifd has {a.runs} runs per peer (the runs column). "
             f"ratio = multifd GB/s / that QEMU's GB/s.")
    L.append(f"- CPU s: user+system CPU seconds of the whole source / "
             f"destination process from its start until the migration "
             f"completed (QEMU: /proc/PID/stat; multifd: rusage of the "
             f"exited process), so it includes startup and preallocation. "
             f"dst RSS: the destination process's peak resident set "
             f"(QEMU VmHWM after completion, multifd ru_maxrss).")
    L.append(f"- Every run is verified: the destination's guest memory "
             f"(QEMU: `pmemsave` of it, or the tmpfs backing file; multifd: "
             f"the XXH3-64 block digest `recv` prints, or the received file) "
             f"is compared with `xxhsum -H3` of the source file. Contents: "
             f"zero (allocated zero pages), random, half (2 MiB runs of zero "
             f"and random, interleaved), text (/usr/share/common-licenses "
             f"concatenated, repeated), guest (a real guest's RAM: Debian's "
             f"kernel booted under TCG with a busybox initramfs whose init "
             f"fills a tmpfs with kernel modules, the kernel's symbols and "
             f"log, sorted numbers, a gzip archive, 64 MiB of random bytes "
             f"and an awk heap, then powers off; made by "
             f"`bench/qemu/realguest.sh`{guest_note}).")
    L.append("- Known asymmetries: (1) prealloc: both populate the "
             "destination's memory when it starts, before the migration "
             "(multifd with `recv --block`), so outside the migration time "
             "but inside the CPU figures. (2) multifd's destination CPU includes "
             "computing the XXH3-64 digest of every block (its verification "
             "output); QEMU's CPU is read before `pmemsave`. (3) tmpfs RSS: "
             "QEMU maps the file (its RSS counts the shared pages), multifd "
             "writes it with pwrite (not in its RSS). (4) MB on the wire is "
             "QEMU's `ram.transferred`; QEMU 7.2 counts multifd pages "
             "before compression there.\n")
    if failures:
        L.append(f"**{len(failures)} run(s) FAILED or differed:**\n")
        for f in failures:
            L.append(f"- {f}")
        L.append("")
    L.append("| content | method | channels | destination | tool | GB/s | "
             "ratio multifd/QEMU | CPU s source | CPU s destination | "
             "MB on the wire | dst RSS MiB | runs |")
    L.append("| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: |")
    for r in rows:
        gbs = fmt(r["gbs"]) if r["n"] else f"FAILED: {r['failed']}"
        L.append(f"| {r['content']} | {r['method']} | {r['channels']} | "
                 f"{r['dest']} | {r['tool']} | {gbs} | "
                 f"{fmt(r['ratio'])} | {fmt(r['cpu_src'])} | "
                 f"{fmt(r['cpu_dst'])} | {fmt(r['transferred'] / 1e6, '%.0f')} | "
                 f"{fmt(r['rss'], '%.0f')} | {r['n']} |")
    zero = [r for r in rows if r["content"] == "zero" and r["n"]]
    if zero:
        L.append("\nDestination resident memory after migrating the all-zero "
                 "guest (peak RSS, MiB):\n")
        L.append("| method | channels | destination | tool | dst RSS MiB |")
        L.append("| --- | --- | --- | --- | ---: |")
        for r in zero:
            L.append(f"| {r['method']} | {r['channels']} | {r['dest']} | "
                     f"{r['tool']} | {fmt(r['rss'], '%.0f')} |")
    L.append(f"\n![GB/s per case]({os.path.basename(a.png)})\n")
    with open(a.md, "w") as f:
        f.write("\n".join(L) + "\n")
    log(f"wrote {a.md}")


def write_png(a, size, peers, rows):
    gp = shutil.which("gnuplot")
    if not gp:
        log("gnuplot not found: no chart")
        return
    tools = ["multifd"] + [p.name for p in peers]
    cases = []
    for r in rows:
        k = (r["content"], r["method"], r["channels"], r["dest"])
        if k not in cases:
            cases.append(k)
    by = {(r["content"], r["method"], r["channels"], r["dest"], r["tool"]): r
          for r in rows}
    dat = a.png + ".dat"
    with open(dat, "w") as f:
        f.write("case " + " ".join(f'"{t}"' for t in tools) + "\n")
        for k in cases:
            lab = f"{k[0]}/{k[1]}/{k[2]}ch" + ("" if k[3] == "anon" else f"/{k[3]}")
            vals = []
            for t in tools:
                r = by.get(k + (t,))
                vals.append(fmt(r["gbs"], "%.3f") if r and r["n"] else "0")
            f.write(f'"{lab}" ' + " ".join(vals) + "\n")
    width = max(900, 60 * len(cases) * max(1, len(tools)) // 2 + 200)
    script = f"""
set terminal pngcairo size {width},600 noenhanced font ",10"
set output "{a.png}"
set title "multifd vs QEMU: paused {size / (1 << 30):g} GiB guest, loopback TCP (median GB/s, GB = 10^9 B)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "GB/s"
set yrange [0:*]
set grid ytics
set xtics rotate by -40
set key top right autotitle columnhead
set bmargin 8
plot for [i=2:{len(tools) + 1}] "{dat}" using i:xtic(1)
"""
    try:
        subprocess.run([gp], input=script, text=True, check=True,
                       capture_output=True)
        log(f"wrote {a.png}")
    except subprocess.CalledProcessError as e:
        log(f"gnuplot failed: {e.stderr}")
    finally:
        os.unlink(dat)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *x: sys.exit(143))
    sys.exit(main())
