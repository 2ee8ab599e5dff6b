#!/usr/bin/env bash
# Compression methods and zero-copy send, end to end, real processes:
#   paused-M-cC-Z:  every multifd-compression M {none,zlib,zstd,lz4} x
#               channels C {1,4} x zero-page-detection Z {none,legacy,
#               multifd}: `multifd send` of two mixed-content blocks (zero
#               runs, random pages, text-like pages; 1536 pages and an odd
#               777 pages) into `recv --into DIR --json`: both exit 0, every
#               block cmp-equal, and both sides' stats: normal+zero pages ==
#               pages sent (zero pages as the files hold them, or none),
#               source and destination agree, per-channel sums; data_bytes ==
#               64 x channels + 1344 x packets + payload, the payload being
#               normal_pages x 4096 for none and compressed_bytes otherwise;
#               compressed methods: compressed_bytes > 0 and raw_bytes ==
#               normal_pages x 4096 on both sides, compressed_bytes equal on
#               both, compression_ratio == raw/compressed > 1, and the
#               text pages must save at least a third of their size (random
#               pages may only grow by framing); none: compressed_bytes == 0.
#   live-M-cC-Z:    the same 24 combinations with `multifd demo --size 32M`
#               (writers dirty the guest while it migrates to a child; the
#               demo verifies every page itself): the verified line, and its
#               --json stats as above (compressed_bytes, raw_bytes).
#   accept-*:   `recv --accept-compression none` refuses a zstd source: both
#               exit 1, both errors name zstd; a list that holds the method
#               accepts it.
#   zc-loopback-*:  --zero-copy-send with send and with demo over loopback:
#               verified (cmp / the demo's own check); zerocopy_sends > 0,
#               zerocopy_notifications == zerocopy_sends, zerocopy_copied <=
#               notifications (loopback: the kernel copies; the figures are
#               in the PASS line), per-channel sums, the destination's
#               zerocopy_* all 0.
#   zc-veth-*:  the same with recv in a network namespace behind a veth
#               pair (send/demo in the root namespace; demo --to relies on
#               feature VERIFY); the PASS line says whether the kernel
#               copied. Skipped where `ip netns` cannot be used.
#   zc-refuse-*: --zero-copy-send with --multifd-compression zstd (send and
#               demo): exit 1, the error names zero-copy and compression;
#               under RLIMIT_MEMLOCK 64 KiB without CAP_IPC_LOCK (prlimit +
#               setpriv): exit 1, the error names RLIMIT_MEMLOCK and the KiB
#               needed, and with exactly that limit the same send works; over
#               a unix: socket: exit 1, the error says SO_ZEROCOPY needs TCP.
# Usage: methods.sh PATH-TO-multifd
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init methods "${1:-}"

T0=$(now_ms)
METHODS=(none zlib zstd lz4)
MODES=(none legacy multifd)

# ---- the blocks -------------------------------------------------------------

SRC=$E2E_TMP/src
mkdir -p "$SRC"
KINDS=$E2E_TMP/kinds.json
# mixed.ram 1536 pages (12 packets of 128), odd.ram 777 pages; kinds.json
# counts the pages of each kind (rand, text, zero, near: one byte set).
if ! python3 - "$SRC" 7331 "$KINDS" <<'PYEOF'; then
import json, os, random, sys
d, seed, kf = sys.argv[1], int(sys.argv[2]), sys.argv[3]
P = 4096
r = random.Random(seed)
ZERO = bytes(P)
WORDS = ("the quick brown fox jumps over lazy dog multifd channel packet "
         "page block zero sync migration destination source qemu ram "
         "lorem ipsum dolor sit amet 0123456789 {} [] () ; : , . \n").split(" ")
kinds = {"rand": 0, "text": 0, "zero": 0, "near": 0}

def page(kind):
    kinds[kind] += 1
    if kind == "zero":
        return ZERO
    if kind == "rand":
        while True:
            b = r.randbytes(P)
            if b != ZERO:
                return b
    if kind == "near":
        b = bytearray(P)
        b[r.randrange(P)] = r.randrange(1, 256)
        return bytes(b)
    out, n = [], 0
    while n < P:
        w = r.choice(WORDS) + r.choice((" ", " ", "\n", ", "))
        out.append(w)
        n += len(w)
    return "".join(out).encode()[:P]

def write(name, segs, total):
    pages = []
    for kind, n in segs:
        if kind == "mix":     # isolated zero and near-zero pages among data
            for i in range(n):
                x = r.random()
                pages.append(page("zero" if x < 0.1 else "near" if x < 0.15
                                  else "text" if x < 0.55 else "rand"))
        else:
            pages += [page(kind) for _ in range(n)]
    assert len(pages) == total, (name, len(pages))
    with open(os.path.join(d, name), "wb") as f:
        f.write(b"".join(pages))

write("mixed.ram", [("zero", 130), ("rand", 200), ("text", 300), ("zero", 1),
                    ("mix", 400), ("zero", 256), ("text", 120), ("rand", 129)],
      1536)
write("odd.ram", [("text", 150), ("rand", 77), ("zero", 200), ("mix", 250),
                  ("text", 99), ("zero", 1)], 777)
json.dump(kinds, open(kf, "w"))
PYEOF
    fail setup "generating blocks failed"
    e2e_finish
fi
FILES=("$SRC/mixed.ram" "$SRC/odd.ram")
EXP=$E2E_TMP/expect.json
expect_json "$EXP" "${FILES[@]}"
echo "# blocks: $(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); k=json.load(open(sys.argv[2])); print(e["pages"], "pages,", e["zero_pages"], "all-zero;", k)' "$EXP" "$KINDS")"

# ---- the stats checker ------------------------------------------------------

# The stats checker runs as one coprocess for the whole script (a python
# start costs 0.2-0.4 s on a loaded 2-core machine). mstats ARGS sends it
# one request, tab-separated, and waits for its "done":
#   OUT KIND METHOD MODE CHANNELS ZC SRC_JSON [DST_JSON]
# KIND paused: one JSON object per file, checked against expect.json;
# KIND live: the demo's stdout, its source stats object (no destination).
# ZC 1: zero-copy send expected. Writes "ok SUMMARY" or the problems, one a
# line, to OUT.
CHECK=$E2E_TMP/mstats.py
cat >"$CHECK" <<'PYEOF'
import json, sys, traceback
P, HDR, INIT = 4096, 1344, 64
base = sys.argv[0].rsplit("/", 1)[0]
exp = json.load(open(base + "/expect.json"))
kinds = json.load(open(base + "/kinds.json"))

def run(argv):
    out, kind, method, mode, nch, zc, srcf = argv[0:7]
    dstf = argv[7] if len(argv) > 7 else None
    nch, zc = int(nch), zc == "1"
    errs = []

    def load(f, who):
        try:
            txt = open(f).read()
        except OSError as e:
            errs.append("%s: %s" % (who, e))
            return None
        objs = []
        for line in txt.splitlines():
            if line.startswith("{"):
                try:
                    objs.append(json.loads(line))
                except ValueError as e:
                    errs.append("%s: bad JSON (%s): %r" % (who, e, line[:120]))
        objs = [o for o in objs if isinstance(o, dict) and "role" in o]
        if len(objs) != 1:
            errs.append("%s: %d stats objects on stdout, expected 1" % (who, len(objs)))
            return None
        return objs[0]

    def check(s, who, role):
        e = lambda m: errs.append("%s: %s" % (who, m))
        need = ("role", "status", "channels", "normal_pages", "zero_pages",
                "legacy_zero_pages", "data_packets", "sync_packets", "data_bytes",
                "raw_bytes", "compressed_bytes", "compress_us", "compression_ratio",
                "zerocopy_sends", "zerocopy_notifications", "zerocopy_copied",
                "zerocopy_copied_passes", "iterations", "channel")
        miss = [k for k in need if k not in s]
        if miss:
            e("missing fields " + ",".join(miss))
            return False
        if s["role"] != role or s["status"] != "completed" or s["channels"] != nch:
            e("role/status/channels %r/%r/%r" % (s["role"], s["status"], s["channels"]))
        n, z = s["normal_pages"], s["zero_pages"]
        if kind == "paused":
            total, zero = exp["pages"], exp["zero_pages"]
            if n + z != total:
                e("normal_pages %d + zero_pages %d != %d pages sent" % (n, z, total))
            if mode == "none" and z != 0:
                e("zero-page-detection none, zero_pages %d" % z)
            if mode != "none" and z != zero:
                e("zero_pages %d != %d all-zero pages in the files" % (z, zero))
        elif mode == "none" and z != 0:
            e("zero-page-detection none, zero_pages %d" % z)
        if mode == "legacy" and s["legacy_zero_pages"] != z:
            e("legacy: legacy_zero_pages %d != zero_pages %d" % (s["legacy_zero_pages"], z))
        if mode != "legacy" and s["legacy_zero_pages"] != 0:
            e("legacy_zero_pages %d in mode %s" % (s["legacy_zero_pages"], mode))
        raw, comp = s["raw_bytes"], s["compressed_bytes"]
        if method == "none":
            if comp != 0:
                e("method none, compressed_bytes %d" % comp)
            payload = n * P
        else:
            if comp <= 0:
                e("compressed_bytes %d, expected > 0" % comp)
            if raw != n * P:
                e("raw_bytes %d != normal_pages %d x 4096" % (raw, n))
            if comp > 0:
                r = s["compression_ratio"]
                if abs(r - raw / comp) > 0.01:
                    e("compression_ratio %r != raw/compressed %.4f" % (r, raw / comp))
                if r <= 1:
                    e("compression_ratio %r <= 1" % r)
            if kind == "paused" and comp > 0:
                # Random pages may grow by framing only; the text must save a third.
                text = kinds["text"] * P
                if comp > raw - text // 3:
                    e("compressed_bytes %d > raw %d - a third of the %d text bytes:"
                      " text did not compress" % (comp, raw, text))
            payload = comp
        pk = s["data_packets"] + s["sync_packets"]
        if s["data_bytes"] != nch * INIT + pk * HDR + payload:
            e("data_bytes %d != %d x 64 + %d packets x 1344 + payload %d"
              % (s["data_bytes"], nch, pk, payload))
        zs, zn, zcp = s["zerocopy_sends"], s["zerocopy_notifications"], s["zerocopy_copied"]
        if role == "source" and zc:
            if zs <= 0:
                e("zerocopy_sends %d, expected > 0" % zs)
            if zn != zs:
                e("zerocopy_notifications %d != zerocopy_sends %d" % (zn, zs))
            if zcp > zn:
                e("zerocopy_copied %d > notifications %d" % (zcp, zn))
            cp = s["zerocopy_copied_passes"]
            if (zcp > 0) != (cp > 0) or cp > s["iterations"]:
                e("zerocopy_copied_passes %d (copied %d, %d passes)" % (cp, zcp, s["iterations"]))
        elif zs or zn or zcp or s["zerocopy_copied_passes"]:
            e("zerocopy_* %d/%d/%d/%d without zero-copy send"
              % (zs, zn, zcp, s["zerocopy_copied_passes"]))
        ch = s["channel"]
        if len(ch) != nch:
            e("%d channel entries" % len(ch))
            return True
        for k, tot in (("normal_pages", n), ("raw_bytes", raw), ("compressed_bytes", comp),
                       ("bytes", s["data_bytes"]), ("zerocopy_sends", zs),
                       ("zerocopy_notifications", zn), ("zerocopy_copied", zcp)):
            got = sum(c.get(k, -10**9) for c in ch)
            if got != tot:
                e("sum of channel %s %d != %d" % (k, got, tot))
        return True

    src = load(srcf, "source")
    ok = src is not None and check(src, "source", "source")
    if dstf:
        dst = load(dstf, "destination")
        if dst is not None and check(dst, "destination", "destination") and ok:
            for k in ("normal_pages", "zero_pages", "data_packets", "data_bytes",
                      "raw_bytes", "compressed_bytes"):
                if src[k] != dst[k]:
                    errs.append("%s: source %r != destination %r" % (k, src[k], dst[k]))
    summary = ""
    if src is not None and "normal_pages" in src:
        summary = "%d normal + %d zero pages" % (src["normal_pages"], src["zero_pages"])
        if kind == "live":
            summary += " in %d passes" % src["iterations"]
        if method != "none" and src.get("compressed_bytes"):
            summary += ", ratio %.2f" % src["compression_ratio"]
        if nch > 1 and len(src.get("channel", [])) == nch:
            summary += ", data packets per channel " + ",".join(
                str(c["packets"] - c["sync_packets"]) for c in src["channel"])
        if zc:
            summary += ", zero-copy: %d sends, %d notifications, %d copied (%s)" % (
                src["zerocopy_sends"], src["zerocopy_notifications"], src["zerocopy_copied"],
                "kernel copied" if src["zerocopy_copied"] else "no copies")
    with open(out, "w") as f:
        f.write("\n".join(errs) if errs else "ok " + summary)

for line in sys.stdin:
    argv = line.rstrip("\n").split("\t")
    try:
        run(argv)
    except Exception:
        with open(argv[0], "w") as f:
            f.write("checker crashed: " + traceback.format_exc().replace("\n", " | "))
    print("done", flush=True)
PYEOF
coproc MSTATS { exec python3 -u "$CHECK"; }
E2E_PIDS+=("$MSTATS_PID")

mstats() {
    local IFS=$'\t' reply=
    rm -f "$1"
    [ -n "${MSTATS[1]:-}" ] || return 1
    printf '%s\n' "$*" >&"${MSTATS[1]}" || return 1
    read -r -t 60 reply <&"${MSTATS[0]}"
    [ "$reply" = "done" ]
}

# mcheck TAG PROBLEMS [LABEL]: PASS/FAIL (named LABEL, default TAG) from
# the problems collected and the checker's verdict in $E2E_TMP/TAG.chk.
mcheck() {
    local tag=${3:-$1} probs=$2 chk=$E2E_TMP/$1.chk
    if [ -s "$chk" ] && head -n 1 "$chk" | grep -q '^ok'; then
        if [ -z "$probs" ]; then
            pass "$tag: $(sed 's/^ok //' "$chk")"
            return
        fi
    elif [ -s "$chk" ]; then
        probs="$probs; $(head -n 8 "$chk" | paste -sd';' -)"
    else
        probs="$probs; no verdict from the stats checker"
    fi
    fail "$tag" "${probs#; }"
}

# errline FILE: the first error line of FILE, or its first line.
errline() {
    grep -m1 -i error "$1" 2>/dev/null || head -n 1 "$1" 2>/dev/null
}

# finish_recv SEND_RC: waits for the destination (RECV_PID) to end; sets
# BG_RC. When the source failed, the destination may wait for channels
# that never come: 3 s, then it is stopped (BG_RC 124).
finish_recv() {
    if [ "$1" = 0 ]; then
        bg_wait "$RECV_PID" 15
    else
        bg_wait "$RECV_PID" 3
    fi
}

# ---- paused: send | recv --into DIR ---------------------------------------

# paused TAG METHOD CHANNELS MODE ZC [listen-wrapper-dir [LISTEN]]
paused() {
    local tag=$1 method=$2 nch=$3 mode=$4 zc=$5 listen=${6:-tcp:127.0.0.1:0}
    local dst=$E2E_TMP/dst-$tag probs='' f extra=()
    [ "$zc" = 1 ] && extra=(--zero-copy-send)
    mkdir -p "$dst"
    if ! start_recv "$tag.recv" --listen "$listen" --into "$dst" --json; then
        fail "$tag" "recv: $RECV_WHY"
        show_file "$E2E_TMP/$tag.recv.err"
        return
    fi
    run_fg "$tag.send" "$E2E_PROC_TIMEOUT" "$REAL" send --to "$RECV_URI" \
        --channels "$nch" --zero-page-detection "$mode" \
        --multifd-compression "$method" "${extra[@]}" --json "${FILES[@]}"
    local src_rc=$FG_RC
    finish_recv "$src_rc"
    [ "$src_rc" = 0 ] || probs="$probs; send exit $src_rc: $(errline "$E2E_TMP/$tag.send.err")"
    [ "$BG_RC" = 0 ] || probs="$probs; recv exit $BG_RC: $(errline "$E2E_TMP/$tag.recv.err")"
    check_stderr_clean "$tag/send-stderr" "$E2E_TMP/$tag.send.err" || probs="$probs; sanitizer (send)"
    check_stderr_clean "$tag/recv-stderr" "$E2E_TMP/$tag.recv.err" || probs="$probs; sanitizer (recv)"
    for f in "${FILES[@]}"; do
        cmp -s "$f" "$dst/$(basename "$f")" || probs="$probs; $(basename "$f") differs or is missing"
    done
    mstats "$E2E_TMP/$tag.chk" paused "$method" "$mode" "$nch" "$zc" \
        "$E2E_TMP/$tag.send.out" "$E2E_TMP/$tag.recv.out"
    mcheck "$tag" "$probs"
    rm -rf "$dst"
}

# ---- live: multifd demo ----------------------------------------------------

# live TAG METHOD CHANNELS MODE ZC [--to URI]: the demo, 32 MiB = 8192 pages.
live() {
    local tag=$1 method=$2 nch=$3 mode=$4 zc=$5 probs='' extra=()
    shift 5
    [ "$zc" = 1 ] && extra=(--zero-copy-send)
    # max-iterations bounds a slow build (sanitizers) where zlib on one
    # channel is slower than the writers: the switchover is then forced.
    run_fg "$tag" "$E2E_PROC_TIMEOUT" "$REAL" demo --size 32M --writers 2 \
        --dirty-rate 64M --channels "$nch" --zero-page-detection "$mode" \
        --max-iterations 8 \
        --multifd-compression "$method" "${extra[@]}" --json "$@"
    [ "$FG_RC" = 0 ] || probs="$probs; demo exit $FG_RC: $(errline "$E2E_TMP/$tag.err")"
    check_stderr_clean "$tag/stderr" "$E2E_TMP/$tag.err" || probs="$probs; sanitizer"
    if [ $# -gt 0 ]; then
        grep -q 'verified by the destination' "$E2E_TMP/$tag.out" ||
            probs="$probs; no 'verified by the destination' line"
    else
        grep -q 'verified: all 8192 pages equal' "$E2E_TMP/$tag.out" ||
            probs="$probs; no 'verified: all 8192 pages equal' line"
    fi
    mstats "$E2E_TMP/$tag.chk" live "$method" "$mode" "$nch" "$zc" \
        "$E2E_TMP/$tag.out"
    mcheck "$tag" "$probs"
}

REAL=$MULTIFD
t=$(now_ms)
for method in "${METHODS[@]}"; do
    for nch in 1 4; do
        for mode in "${MODES[@]}"; do
            paused "paused-$method-c$nch-$mode" "$method" "$nch" "$mode" 0
        done
    done
done
echo "# paused: $(($(now_ms) - t)) ms"
t=$(now_ms)
for method in "${METHODS[@]}"; do
    for nch in 1 4; do
        for mode in "${MODES[@]}"; do
            live "live-$method-c$nch-$mode" "$method" "$nch" "$mode" 0
        done
    done
done
echo "# live: $(($(now_ms) - t)) ms"

# ---- accept-compression -----------------------------------------------------

tag=accept-refused
d=$E2E_TMP/dst-$tag
mkdir -p "$d"
if start_recv "$tag.recv" --listen tcp:127.0.0.1:0 --into "$d" \
    --accept-compression none; then
    run_fg "$tag.send" "$E2E_PROC_TIMEOUT" "$MULTIFD" send --to "$RECV_URI" \
        --channels 2 --multifd-compression zstd "${FILES[@]}"
    src_rc=$FG_RC
    bg_wait "$RECV_PID" 15
    serr=$(grep -m1 'error' "$E2E_TMP/$tag.send.err")
    rerr=$(grep -m1 'error' "$E2E_TMP/$tag.recv.err")
    if [ "$src_rc" != 1 ] || [ "$BG_RC" != 1 ]; then
        fail "$tag" "send exit $src_rc, recv exit $BG_RC (want 1 and 1): $serr / $rerr"
    elif ! grep -q zstd <<<"$serr" || ! grep -q zstd <<<"$rerr"; then
        fail "$tag" "an error does not name zstd: send: '$serr'; recv: '$rerr'"
    else
        pass "$tag: send: $serr; recv: $rerr"
    fi
    check_stderr_clean "$tag" "$E2E_TMP/$tag.send.err"
    check_stderr_clean "$tag" "$E2E_TMP/$tag.recv.err"
else
    fail "$tag" "$RECV_WHY"
fi

tag=accept-listed
mkdir -p "$E2E_TMP/dst-$tag"
if start_recv "$tag.recv" --listen tcp:127.0.0.1:0 \
    --into "$E2E_TMP/dst-$tag" --accept-compression none,lz4; then
    run_fg "$tag.send" "$E2E_PROC_TIMEOUT" "$MULTIFD" send --to "$RECV_URI" \
        --channels 2 --multifd-compression lz4 "${FILES[@]}"
    src_rc=$FG_RC
    bg_wait "$RECV_PID" 15
    if [ "$src_rc" = 0 ] && [ "$BG_RC" = 0 ] &&
        cmp -s "${FILES[1]}" "$E2E_TMP/dst-$tag/odd.ram"; then
        pass "$tag (lz4 into --accept-compression none,lz4)"
    else
        fail "$tag" "send exit $src_rc, recv exit $BG_RC, or odd.ram differs"
        show_file "$E2E_TMP/$tag.recv.err"
    fi
else
    fail "$tag" "$RECV_WHY"
fi

# ---- zero-copy send over loopback --------------------------------------------

paused zc-loopback-send none 4 multifd 1
paused zc-loopback-send-c1-legacy none 1 legacy 1
live zc-loopback-demo none 4 multifd 1

# ---- zero-copy over a veth pair between two network namespaces -------------

if ! command -v ip >/dev/null || ! e2e_netns_up 232 "$REAL"; then
    e2e_netns_down
    skip zc-veth "cannot create a network namespace and veth pair here"
else
    # start_recv runs $MULTIFD: the wrapper runs it inside the namespace;
    # send and demo run $REAL in the root namespace.
    MULTIFD=$E2E_IN_NS
    paused zc-veth-send none 4 multifd 1 tcp:10.232.0.2:0
    tag='zc-veth-demo'
    if start_recv "$tag.recv" --listen tcp:10.232.0.2:0 --into anon: --json; then
        live "$tag" none 2 multifd 1 --to "$RECV_URI"
        bg_wait "$RECV_PID" 15
        if [ "$BG_RC" != 0 ]; then
            fail "$tag-recv" "recv exit $BG_RC: $(errline "$E2E_TMP/$tag.recv.err")"
        elif ! check_stderr_clean "$tag-recv" "$E2E_TMP/$tag.recv.err"; then
            :
        else
            pass "$tag-recv (VERIFY: every block's digest checked by the destination)"
        fi
    else
        fail "$tag" "$RECV_WHY"
    fi
    MULTIFD=$REAL
    e2e_netns_down
fi

# ---- zero-copy refused -------------------------------------------------------

# refused TAG WANT-REGEX... -- CMD...: CMD must exit 1 with one stderr line
# matching every regex (case-insensitive).
refused() {
    local tag=$1 re=()
    shift
    while [ "$1" != -- ]; do
        re+=("$1")
        shift
    done
    shift
    run_fg "$tag" "$E2E_PROC_TIMEOUT" "$@"
    local msg r
    msg=$(grep -m1 -i 'error' "$E2E_TMP/$tag.err")
    check_stderr_clean "$tag" "$E2E_TMP/$tag.err" || return 1
    if [ "$FG_RC" != 1 ]; then
        fail "$tag" "exit $FG_RC, want 1: ${msg:-no error line}"
        return 1
    fi
    for r in "${re[@]}"; do
        if ! grep -qiE -- "$r" <<<"$msg"; then
            fail "$tag" "error does not match /$r/: '$msg'"
            return 1
        fi
    done
    pass "$tag: $msg"
}

# memlock_enough KIB: the amount asked for must be enough: a one-channel
# zero-copy send, still without CAP_IPC_LOCK, under a quarter of what four
# channels need (within the hard limit: raising it needs CAP_SYS_RESOURCE).
memlock_enough() {
    local kib=$1 tag=zc-memlock-enough probs='' f hard
    hard=$(ulimit -Hl)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$kib" ]; then
        skip "$tag" "one channel needs $kib KiB, above the hard RLIMIT_MEMLOCK $hard KiB"
        return
    fi
    mkdir -p "$E2E_TMP/dst-$tag"
    if ! start_recv "$tag.recv" --listen tcp:127.0.0.1:0 \
        --into "$E2E_TMP/dst-$tag" --json; then
        fail "$tag" "$RECV_WHY"
        return
    fi
    run_fg "$tag.send" "$E2E_PROC_TIMEOUT" prlimit --memlock=$((kib * 1024)) \
        "${NOCAP[@]}" "$MULTIFD" send --to "$RECV_URI" --channels 1 --zero-copy-send \
        --json "${FILES[@]}"
    local src_rc=$FG_RC
    finish_recv "$src_rc"
    [ "$src_rc" = 0 ] || probs="$probs; send exit $src_rc: $(errline "$E2E_TMP/$tag.send.err")"
    [ "$BG_RC" = 0 ] || probs="$probs; recv exit $BG_RC: $(errline "$E2E_TMP/$tag.recv.err")"
    for f in "${FILES[@]}"; do
        cmp -s "$f" "$E2E_TMP/dst-$tag/$(basename "$f")" ||
            probs="$probs; $(basename "$f") differs or is missing"
    done
    mstats "$E2E_TMP/$tag.chk" paused none multifd 1 1 \
        "$E2E_TMP/$tag.send.out" "$E2E_TMP/$tag.recv.out"
    mcheck "$tag" "$probs" "$tag (RLIMIT_MEMLOCK $kib KiB, 1 channel, no CAP_IPC_LOCK)"
}

# A destination is listening, so a refusal is the source's own, not a
# failed connection; it is stopped afterwards.
tag='zc-refuse-compression'
if start_recv "$tag.recv" --listen tcp:127.0.0.1:0 --into "$E2E_TMP"; then
    lpid=$RECV_PID lchild=$RECV_CHILD
    refused "$tag-send" 'zero-copy' 'compression' 'zstd' -- \
        "$MULTIFD" send --to "$RECV_URI" --zero-copy-send \
        --multifd-compression zstd "${FILES[@]}"
    refused "$tag-demo" 'zero-copy' 'compression' 'zstd' -- \
        "$MULTIFD" demo --size 32M --zero-copy-send --multifd-compression zstd
    # memlock: CAP_IPC_LOCK (root has it) lifts the limit: drop it, so the
    # limit is what counts. NOCAP: the prefix that runs a command without it.
    NOCAP=(setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock)
    if ! command -v prlimit >/dev/null || ! command -v setpriv >/dev/null; then
        skip zc-refuse-memlock "needs prlimit and setpriv"
    elif ! "${NOCAP[@]}" true 2>/dev/null &&
        [ $((0x$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 14 & 1)) = 1 ]; then
        skip zc-refuse-memlock "cannot drop CAP_IPC_LOCK here (setpriv failed)"
    else
        "${NOCAP[@]}" true 2>/dev/null || NOCAP=()
        low=(prlimit --memlock=65536 "${NOCAP[@]}")
        if refused zc-refuse-memlock 'RLIMIT_MEMLOCK' 'is 64 KiB' \
            'up to [0-9]+ KiB' 'ulimit -l [0-9]+' -- \
            "${low[@]}" "$MULTIFD" send --to "$RECV_URI" --channels 4 \
            --zero-copy-send "${FILES[@]}"; then
            need=$(grep -m1 -oE 'up to [0-9]+ KiB' "$E2E_TMP/zc-refuse-memlock.err" | grep -oE '[0-9]+')
            ul=$(grep -m1 -oE 'ulimit -l [0-9]+' "$E2E_TMP/zc-refuse-memlock.err" | grep -oE '[0-9]+$')
            wmax=$(awk '{print int($3 / 1024)}' /proc/sys/net/ipv4/tcp_wmem 2>/dev/null)
            if [ "$need" != "$ul" ]; then
                fail zc-refuse-memlock-need "'up to $need KiB' but 'ulimit -l $ul'"
            elif [ -n "$wmax" ] && [ "$need" -lt $((4 * wmax)) ]; then
                fail zc-refuse-memlock-need "$need KiB < 4 channels x tcp_wmem max $wmax KiB"
            else
                memlock_enough $((need / 4))
            fi
        fi
    fi
    kill -TERM "$lchild" 2>/dev/null
    bg_wait "$lpid" 5
else
    fail "$tag" "$RECV_WHY"
fi

tag='zc-refuse-unix'
if start_recv "$tag.recv" --listen "unix:$E2E_TMP/$tag.sock" --into "$E2E_TMP"; then
    refused "$tag" 'SO_ZEROCOPY' 'TCP' -- \
        "$MULTIFD" send --to "$RECV_URI" --zero-copy-send "${FILES[@]}"
    bg_wait "$RECV_PID" 15
    if [ "$BG_RC" = 0 ] || [ "$BG_RC" = 124 ]; then
        fail "$tag-recv" "recv exit $BG_RC after the source refused"
    else
        pass "$tag-recv: exit $BG_RC: $(errline "$E2E_TMP/$tag.recv.err")"
    fi
else
    fail "$tag" "$RECV_WHY"
fi

echo "# methods took $(($(now_ms) - T0)) ms"
e2e_finish
