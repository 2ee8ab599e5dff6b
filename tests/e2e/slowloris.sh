#!/usr/bin/env bash
# A source that stalls cannot hold a destination (issue 8's hostile
# resources), played by a small independent peer in Python:
#   main: after a valid setup, a record fed one byte every 0.5 s on the main
#         channel: `recv --idle-timeout 2000` fails within a few seconds,
#         one error line naming the idle timeout, exit 1;
#   data: the same on a data channel (the main channel silent);
#   oversize: a HELLO/BLOCK declaring 1 TiB against --max-total-size 1G
#         (and against its other name, --max-size 1G) is refused at BLOCK,
#         before anything is mapped.
#   strangers: 24 silent connections ahead of a real source do not hold it
#         (each connection is vetted on a thread of its own; beyond 16 the
#         oldest is evicted).
# Usage: slowloris.sh PATH-TO-multifd
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init slowloris "${1:-}"

PEER=$E2E_TMP/peer.py
cat >"$PEER" <<'PYEOF'
import os, socket, struct, sys, time
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3].split("-")[0]
def rec(t, body=b""):
    return struct.pack(">II", t, len(body)) + body + b"\0" * ((-len(body)) % 8)
m = socket.create_connection((host, port))
m.sendall(struct.pack(">II", 0x4D464443, 1) + b"\0" * 8)
uuid = os.urandom(16)
# HELLO: uuid, page_size, pages_per_packet, channels, method, level, zpd,
# features, block_count, reserved
m.sendall(rec(1, uuid + struct.pack(">IIIIiIQII", 4096, 128, 1, 0, 0, 2, 0, 1, 0)))
size = (1 << 40) if mode == "oversize" else (1 << 20)
m.sendall(rec(2, struct.pack(">QII", size, 0, 3) + b"ram"))
m.sendall(rec(3))
if mode == "oversize":
    m.settimeout(10)
    try:
        while m.recv(4096):
            pass
    except OSError:
        pass
    sys.exit(0)
m.recv(16)
m.recv(24)  # preamble, READY
d = socket.create_connection((host, port))
d.sendall(struct.pack(">II", 0x11223344, 1) + uuid + bytes([0]) + b"\0" * 39)
time.sleep(0.3)
sock, data = ((m, rec(0x11, struct.pack(">Q", 1))) if mode == "main"
              else (d, b"\x11\x22\x33\x44" + b"\0" * 1400))
t0 = time.time()
for b in data:
    try:
        sock.sendall(bytes([b]))
    except OSError:
        break
    time.sleep(0.5)
    if time.time() - t0 > 30:
        break
PYEOF

# one TAG WORDS RECV-ARGS...: the peer in mode TAG against recv.
one() {
    local tag=$1 words=$2
    shift 2
    if ! start_recv "$tag" --listen tcp:127.0.0.1:0 --into anon: "$@"; then
        fail "$tag/start" "$RECV_WHY"
        return
    fi
    local t0 port
    t0=$(now_ms)
    port=${RECV_URI##*:}
    timeout 40 python3 "$PEER" 127.0.0.1 "$port" "$tag" >/dev/null 2>&1 &
    local peer=$!
    bg_wait "$RECV_PID" 30
    local rc=$BG_RC took=$(($(now_ms) - t0))
    kill "$peer" 2>/dev/null
    wait "$peer" 2>/dev/null
    check_refused "$tag" "$rc" "$E2E_TMP/$tag.err" "$words" "$took ms"
    check_stderr_clean "$tag/stderr" "$E2E_TMP/$tag.err"
}

one main "idle-timeout" --idle-timeout 2000
one data "idle-timeout" --idle-timeout 2000
one oversize "max-total-size" --max-total-size 1G
one oversize-alias "max-total-size" --max-size 1G

# Strangers that connect and send nothing are vetted each on a thread of
# its own, and beyond 16 a newer connection evicts the oldest: a source
# behind 24 of them (its handshake timeout 5 s) is not held by the
# destination's 30 s, and its migration completes, verified.
BLK=$E2E_TMP/blk.ram
head -c 4M /dev/urandom >"$BLK"
WANT=$(xxh3 "$BLK")
if start_recv strangers --listen tcp:127.0.0.1:0 --into anon: --handshake-timeout 30000; then
    silent_peers "$RECV_URI" 24 40
    t0=$(now_ms)
    run_fg strangers.send 30 "$MULTIFD" send --to "$RECV_URI" --channels 2 \
        --handshake-timeout 5000 "$BLK"
    took=$(($(now_ms) - t0))
    kill "$SILENT_PID" 2>/dev/null
    bg_wait "$RECV_PID" 20
    got=$(sed -n 's/^digest blk.ram //p' "$E2E_TMP/strangers.out")
    if [ "$FG_RC" = 0 ] && [ "$BG_RC" = 0 ] && [ "$got" = "$WANT" ]; then
        pass "behind-silent-strangers ($took ms)"
    else
        fail behind-silent-strangers "send $FG_RC, recv $BG_RC, digest '$got' (want $WANT)"
        show_file "$E2E_TMP/strangers.send.err"
        show_file "$E2E_TMP/strangers.err"
    fi
else
    fail strangers/start "$RECV_WHY"
fi
e2e_finish
