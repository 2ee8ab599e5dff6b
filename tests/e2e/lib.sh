# shellcheck shell=bash
# Variables set here are read by the scripts that source this file.
# shellcheck disable=SC2034
# Shared helpers for the multifd end-to-end tests. Source it, then call
# e2e_init NAME "$1" first and e2e_finish last.
#
#   e2e_init NAME BIN        temp dir in $E2E_TMP, traps, $MULTIFD = BIN
#   pass NAME / fail NAME REASON / skip NAME REASON
#   e2e_finish               prints "N passed, N failed[, N skipped]", exits
#   e2e_tmpdir BASE          another temp dir under BASE, removed at exit
#   bg_start TAG SECS CMD... runs CMD in the background under `timeout SECS`,
#                            stdout/stderr in $E2E_TMP/TAG.{out,err}; sets
#                            BG_PID (the timeout wrapper) and BG_CHILD (the
#                            real process id, from $E2E_TMP/TAG.pid)
#   bg_wait PID SECS         waits at most SECS for PID; sets BG_RC (124 if it
#                            had to be killed); returns 0 if it exited in time
#   start_recv TAG ARGS...   multifd recv ARGS --uri-file F in the background,
#                            waits until F exists; sets RECV_PID, RECV_CHILD,
#                            RECV_URI (returns 1 with RECV_WHY on failure)
#   run_fg TAG SECS CMD...   CMD under timeout in the foreground, output in
#                            $E2E_TMP/TAG.{out,err}; sets FG_RC
#   check_stderr_clean TAG FILE  fails if FILE holds a sanitizer report
#   e2e_netns_up NET BIN     a network namespace joined by a veth pair, to
#                            play a second host: 10.NET.0.1 here, 10.NET.0.2
#                            there; sets E2E_NS, E2E_VETH (this side's end)
#                            and E2E_IN_NS (a wrapper running BIN in the
#                            namespace); returns 1 where it cannot be made.
#                            e2e_netns_down removes it (also at exit)
#   gen_blocks DIR SEED      writes the matrix's block files into DIR
#   expect_json DIR OUT FILE...  counts pages / all-zero pages per block
#   check_stats ...          see the function
#   check_refused TAG RC ERRFILE WORDS [NOTE]  passes TAG when RC is 1 and
#                            ERRFILE holds exactly one "error:" line, which
#                            contains WORDS; NOTE is added to the verdict

set -u

E2E_PASSED=0
E2E_FAILED=0
E2E_SKIPPED=0
E2E_PIDS=()
E2E_DIRS=()
E2E_TMP=
E2E_NAME=
MULTIFD=
# Upper bound for one multifd process (seconds); ASan builds are slower.
E2E_PROC_TIMEOUT=${E2E_PROC_TIMEOUT:-60}

check_refused() {
    local tag=$1 rc=$2 err=$3 words=$4 note=${5:-}
    if [ "$rc" = 1 ] && [ "$(grep -c 'error:' "$err")" = 1 ] && grep -q "$words" "$err"; then
        pass "$tag${note:+ ($note)}"
    else
        fail "$tag" "exit $rc (want 1) and one error line with '$words'${note:+; $note}"
        show_file "$err"
    fi
}

pass() {
    E2E_PASSED=$((E2E_PASSED + 1))
    echo "PASS $1"
}

fail() {
    E2E_FAILED=$((E2E_FAILED + 1))
    echo "FAIL $1: $2"
}

skip() {
    E2E_SKIPPED=$((E2E_SKIPPED + 1))
    echo "SKIP $1: $2"
}

# Prints the first lines of a file indented, for failure diagnostics.
show_file() {
    local f=$1 n=${2:-10}
    [ -s "$f" ] || return 0
    echo "    --- $(basename "$f") (first $n lines) ---"
    head -n "$n" "$f" | sed 's/^/    | /'
}

e2e_cleanup() {
    local pid i alive
    trap - EXIT INT TERM
    e2e_netns_down
    # Ask politely (timeout forwards TERM to its child), then force.
    for pid in "${E2E_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for i in $(seq 1 20); do
        alive=0
        for pid in "${E2E_PIDS[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        [ "$alive" = 0 ] && break
        sleep 0.05
    done
    for pid in "${E2E_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null
    done
    for pid in "${E2E_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    for i in "${E2E_DIRS[@]}"; do
        [ -n "$i" ] && [ -d "$i" ] && rm -rf -- "$i"
    done
}

e2e_init() {
    E2E_NAME=$1
    MULTIFD=${2:-}
    if [ -z "$MULTIFD" ]; then
        echo "usage: $0 PATH-TO-multifd" >&2
        exit 2
    fi
    case $MULTIFD in
        /*) ;;
        *) MULTIFD=$PWD/$MULTIFD ;;
    esac
    if [ ! -x "$MULTIFD" ]; then
        echo "$E2E_NAME: $MULTIFD is not an executable" >&2
        exit 2
    fi
    local t
    for t in timeout python3 cmp stat; do
        if ! command -v "$t" >/dev/null 2>&1; then
            echo "$E2E_NAME: needs $t" >&2
            exit 2
        fi
    done
    trap e2e_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/mfd-e2e-$E2E_NAME.XXXXXX") || exit 2
    E2E_DIRS+=("$E2E_TMP")
}

# e2e_tmpdir BASE: prints a new temp dir under BASE (registered for removal).
# Call as: d=$(e2e_tmpdir /dev/shm) && e2e_register_dir "$d"
e2e_tmpdir() {
    mktemp -d "$1/mfd-e2e-$E2E_NAME.XXXXXX"
}

e2e_register_dir() {
    E2E_DIRS+=("$1")
}

e2e_finish() {
    local line="$E2E_PASSED passed, $E2E_FAILED failed"
    if [ "$E2E_SKIPPED" -gt 0 ]; then
        line="$line, $E2E_SKIPPED skipped"
    fi
    echo "$line"
    if [ "$E2E_FAILED" -gt 0 ] || [ $((E2E_PASSED + E2E_SKIPPED)) -eq 0 ]; then
        exit 1
    fi
    exit 0
}

# Monotonic-enough milliseconds.
now_ms() {
    local t=${EPOCHREALTIME/./}
    echo $((t / 1000))
}

bg_start() {
    local tag=$1 secs=$2
    shift 2
    local pidf=$E2E_TMP/$tag.pid
    rm -f "$pidf"
    # The inner shell starts the command, records its pid in $pidf (the real
    # process, for signals) and waits for it, so a command killed by a
    # signal does not kill the timeout wrapper with the same signal (bash
    # would then print a "Killed" job notice). timeout still bounds all of
    # it: on expiry it signals its whole process group.
    # shellcheck disable=SC2016
    timeout -k 5 "$secs" bash -c '"$@" & echo $! > "$0.tmp" && mv "$0.tmp" "$0"
        exec 2>/dev/null; wait $!' \
        "$pidf" "$@" >"$E2E_TMP/$tag.out" 2>"$E2E_TMP/$tag.err" &
    BG_PID=$!
    E2E_PIDS+=("$BG_PID")
    BG_CHILD=
    local i
    for i in $(seq 1 500); do
        if [ -s "$pidf" ]; then
            BG_CHILD=$(cat "$pidf")
            break
        fi
        kill -0 "$BG_PID" 2>/dev/null || break
        sleep 0.01
    done
}

bg_wait() {
    local pid=$1 secs=$2
    local deadline=$(($(now_ms) + secs * 1000))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(now_ms)" -ge "$deadline" ]; then
            kill -TERM "$pid" 2>/dev/null
            sleep 0.2
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            BG_RC=124
            return 1
        fi
        sleep 0.02
    done
    wait "$pid"
    BG_RC=$?
    return 0
}

start_recv() {
    local tag=$1
    shift
    local uf=$E2E_TMP/$tag.uri
    rm -f "$uf"
    RECV_URI=
    RECV_WHY=
    bg_start "$tag" "$E2E_PROC_TIMEOUT" "$MULTIFD" recv "$@" --uri-file "$uf"
    RECV_PID=$BG_PID
    RECV_CHILD=$BG_CHILD
    local i
    for i in $(seq 1 500); do
        if [ -s "$uf" ]; then
            RECV_URI=$(head -n 1 "$uf")
            if [ -n "$RECV_URI" ]; then
                return 0
            fi
        fi
        if ! kill -0 "$RECV_PID" 2>/dev/null; then
            wait "$RECV_PID"
            RECV_WHY="recv exited with $? before writing --uri-file"
            return 1
        fi
        sleep 0.02
    done
    RECV_WHY="no --uri-file after 10 s"
    return 1
}

# silent_peers URI N SECS: N connections to tcp URI that send nothing and
# stay open for SECS seconds (strangers holding a destination's accept
# queue), in the background: SILENT_PID.
silent_peers() {
    local hp=${1#tcp:}
    python3 -c '
import socket, sys, time
host, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
socks = [socket.create_connection((host, port)) for _ in range(n)]
time.sleep(secs)' "${hp%:*}" "${hp##*:}" "$2" "$3" >/dev/null 2>&1 &
    SILENT_PID=$!
    E2E_PIDS+=("$SILENT_PID")
    sleep 0.3
}

run_fg() {
    local tag=$1 secs=$2
    shift 2
    timeout -k 5 "$secs" "$@" >"$E2E_TMP/$tag.out" 2>"$E2E_TMP/$tag.err"
    FG_RC=$?
}

check_stderr_clean() {
    local tag=$1 f=$2
    if grep -qE 'Sanitizer|runtime error:|LeakSanitizer|^==[0-9]+==' "$f" 2>/dev/null; then
        fail "$tag" "sanitizer report on stderr ($f)"
        show_file "$f" 20
        return 1
    fi
    return 0
}

# peer_case TAG SCRIPT ARGS...: one case of a Python peer (peerlib.py's
# run_case: `python3 SCRIPT TAG ARGS... $E2E_TMP`, which starts the process
# under test itself, its stderr in TAG.err, and prints "PASS TAG (note)" or
# "FAIL TAG: why" last) as pass or fail; the stderr of every process it ran
# (TAG.err, and TAG.ref.err for a reference run) checked for sanitizer
# reports. The peer bounds itself well within 30 s; timeout is the
# backstop. Files are shown with control characters made visible (a case's
# stderr may hold the very escape sequences it is about).
peer_case() {
    local tag=$1 script=$2 line f
    shift 2
    # PEER_SKIP: a regular expression of cases not to run (make tsan).
    if [ -n "${PEER_SKIP:-}" ] && echo "$tag" | grep -Eq -- "$PEER_SKIP"; then
        skip "$tag" "PEER_SKIP=$PEER_SKIP"
        return
    fi
    run_fg "$tag.peer" 30 python3 "$script" "$tag" "$@" "$E2E_TMP"
    line=$(tail -n 1 "$E2E_TMP/$tag.peer.out")
    if [ "$FG_RC" = 0 ] && [ "${line%% *}" = PASS ]; then
        pass "${line#PASS }"
    else
        if [ "$FG_RC" = 1 ] && [ "${line%% *}" = FAIL ]; then
            fail "$tag" "${line#FAIL "$tag": }"
        else
            fail "$tag" "peer exit $FG_RC, no verdict"
        fi
        for f in "$E2E_TMP/$tag.peer.err" "$E2E_TMP/$tag.err"; do
            [ -f "$f" ] && cat -v "$f" >"$f.vis" && show_file "$f.vis"
        done
    fi
    for f in "$E2E_TMP/$tag.err" "$E2E_TMP/$tag.ref.err"; do
        [ -f "$f" ] && check_stderr_clean "$tag/stderr" "$f"
    done
    return 0
}

# Allocated bytes of a file (0 if it does not exist).
alloc_bytes() {
    local s b n
    s=$(stat -c '%b %B' "$1" 2>/dev/null) || {
        echo 0
        return
    }
    read -r n b <<<"$s"
    echo $((n * b))
}

# gen_blocks DIR SEED: the matrix's blocks (4 KiB pages):
#   tiny.ram  3 pages: random, zero, text
#   odd.ram   1000 pages (not a multiple of the 128-page packet), mixed
#   big.ram   2048 pages (8 MiB): zero runs, random runs with isolated zero
#             pages, text runs, alternating zero/data, nearly-zero pages
#   zero.ram  257 pages, all zero (sparse, made with truncate)
gen_blocks() {
    python3 - "$1" "$2" <<'PYEOF'
import os, random, sys
d, seed = sys.argv[1], int(sys.argv[2])
P = 4096
r = random.Random(seed)
ZERO = bytes(P)
WORDS = ("the quick brown fox jumps over lazy dog multifd channel packet "
         "page block zero sync migration destination source qemu ram "
         "lorem ipsum dolor sit amet 0123456789 {} [] () ; : , . \n").split(" ")

def text_page():
    out = []
    n = 0
    while n < P:
        w = r.choice(WORDS) + r.choice((" ", " ", "\n", ", "))
        out.append(w)
        n += len(w)
    return "".join(out).encode()[:P]

def rand_page():
    while True:
        b = r.randbytes(P)
        if b != ZERO:
            return b

def near_zero(kind):
    b = bytearray(P)
    if kind == 0:
        b[P - 1] = 1          # only the last byte set
    elif kind == 1:
        b[0] = 0x80           # only the first byte set
    else:
        b[r.randrange(1, P - 1)] = r.randrange(1, 256)
    return bytes(b)

def seg(kind, n):
    pages = []
    for i in range(n):
        if kind == "zero":
            pages.append(ZERO)
        elif kind == "rand":
            pages.append(rand_page())
        elif kind == "text":
            pages.append(text_page())
        elif kind == "alt":       # zero, data, zero, data ...
            pages.append(ZERO if i % 2 == 0 else rand_page())
        elif kind == "randz":     # random with isolated single zero pages
            if i % 2 == 1 and i + 1 < n and r.random() < 0.12:
                pages.append(ZERO)
            else:
                pages.append(rand_page())
        elif kind == "textz":     # text with isolated zero pages
            pages.append(ZERO if r.random() < 0.05 else text_page())
        elif kind == "near":
            pages.append(near_zero(i % 3))
        else:
            raise SystemExit("bad kind " + kind)
    return pages

def write(name, segs, total):
    pages = []
    for k, n in segs:
        pages += seg(k, n)
    assert len(pages) == total, (name, len(pages))
    # isolated single zero pages are only in randz/textz/alt runs; make sure
    # the first page after a packet boundary is sometimes zero too
    with open(os.path.join(d, name), "wb") as f:
        for p in pages:
            f.write(p)

write("tiny.ram", [("rand", 1), ("zero", 1), ("text", 1)], 3)
write("odd.ram", [("rand", 100), ("zero", 200), ("text", 150), ("randz", 300),
                  ("zero", 50), ("alt", 100), ("near", 6), ("rand", 94)], 1000)
write("big.ram", [("rand", 64), ("zero", 128), ("randz", 258), ("text", 251),
                  ("near", 5), ("zero", 1), ("near", 1), ("zero", 293),
                  ("randz", 500), ("alt", 300), ("textz", 246), ("zero", 1)],
      2048)
with open(os.path.join(d, "zero.ram"), "wb") as f:
    f.truncate(257 * P)
PYEOF
}

# expect_json OUT FILE...: writes {"blocks": {name: {"pages", "zero_pages",
# "bytes"}}, "pages", "zero_pages", "bytes"} counted from the files
# themselves (a page is zero if all 4096 bytes are 0).
expect_json() {
    local out=$1
    shift
    python3 - "$out" "$@" <<'PYEOF'
import json, os, sys
P = 4096
ZERO = bytes(P)
res = {"blocks": {}, "pages": 0, "zero_pages": 0, "bytes": 0}
for path in sys.argv[2:]:
    size = os.path.getsize(path)
    z = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(P * 256)
            if not b:
                break
            for i in range(0, len(b), P):
                if b[i:i + P] == ZERO:
                    z += 1
    name = os.path.basename(path)
    res["blocks"][name] = {"pages": size // P, "zero_pages": z, "bytes": size}
    res["pages"] += size // P
    res["zero_pages"] += z
    res["bytes"] += size
with open(sys.argv[1], "w") as f:
    json.dump(res, f)
PYEOF
}

# check_stats TAG SRC_JSON DST_JSON EXPECT_JSON MODE CHANNELS
# Checks both stats objects against what was sent (see e2e README in the
# scripts' headers). Prints nothing; sets STATS_ERRS to the problems found
# (one per line, empty if none). Returns 0 if none.
check_stats() {
    STATS_ERRS=$(python3 - "$@" <<'PYEOF'
import json, sys
tag, srcf, dstf, expf, mode, nch = sys.argv[1:7]
nch = int(nch)
P = 4096
PKT_PAGES = 128
HDR = 320 + 8 * PKT_PAGES
errs = []

def load(f, who):
    try:
        with open(f) as fh:
            txt = fh.read()
    except OSError as e:
        errs.append("%s: cannot read stats: %s" % (who, e))
        return None
    try:
        obj = json.loads(txt)
    except ValueError as e:
        errs.append("%s: stdout is not one JSON object (%s): %r" % (who, e, txt[:200]))
        return None
    if not isinstance(obj, dict):
        errs.append("%s: JSON is not an object" % who)
        return None
    return obj

exp = json.load(open(expf))
src = load(srcf, "source")
dst = load(dstf, "destination")
total = exp["pages"]
zero = exp["zero_pages"]

FIELDS = ("role", "status", "channels", "page_size", "total_time_us",
          "setup_time_us", "ram_bytes", "main_bytes", "data_bytes",
          "normal_pages", "zero_pages", "legacy_zero_pages", "data_packets",
          "sync_packets", "iterations", "throughput_gbps", "channel")
CH_FIELDS = ("id", "packets", "sync_packets", "normal_pages", "zero_pages", "bytes")

def check(s, who, role):
    if s is None:
        return False
    missing = [f for f in FIELDS if f not in s]
    if missing:
        errs.append("%s: missing fields %s" % (who, ",".join(missing)))
        return False
    e = lambda m: errs.append("%s: %s" % (who, m))
    if s["role"] != role:
        e("role %r != %r" % (s["role"], role))
    if s["status"] not in ("completed", 3):
        e("status %r, expected completed" % (s["status"],))
    if s["channels"] != nch:
        e("channels %r != %d" % (s["channels"], nch))
    if s["page_size"] != P:
        e("page_size %r != %d" % (s["page_size"], P))
    if s["ram_bytes"] != exp["bytes"]:
        e("ram_bytes %r != %d" % (s["ram_bytes"], exp["bytes"]))
    if s["normal_pages"] + s["zero_pages"] != total:
        e("normal_pages %d + zero_pages %d != %d total pages"
          % (s["normal_pages"], s["zero_pages"], total))
    if mode == "none":
        if s["zero_pages"] != 0:
            e("zero-page-detection none but zero_pages %d" % s["zero_pages"])
        if s["normal_pages"] != total:
            e("zero-page-detection none but normal_pages %d != %d"
              % (s["normal_pages"], total))
    else:
        if s["zero_pages"] != zero:
            e("zero_pages %d != %d all-zero pages generated" % (s["zero_pages"], zero))
        if s["normal_pages"] != total - zero:
            e("normal_pages %d != %d non-zero pages" % (s["normal_pages"], total - zero))
    if mode == "legacy":
        if s["legacy_zero_pages"] != s["zero_pages"]:
            e("legacy mode: legacy_zero_pages %d != zero_pages %d"
              % (s["legacy_zero_pages"], s["zero_pages"]))
    elif s["legacy_zero_pages"] != 0:
        e("%s mode: legacy_zero_pages %d != 0" % (mode, s["legacy_zero_pages"]))
    if s["iterations"] < 1:
        e("iterations %r < 1" % s["iterations"])
    if s["sync_packets"] != s["iterations"] * nch:
        e("sync_packets %d != iterations %d x channels %d"
          % (s["sync_packets"], s["iterations"], nch))
    # Packets never span blocks: lower bound of data_packets.
    if mode == "legacy":
        listed = {n: b["pages"] - b["zero_pages"] for n, b in exp["blocks"].items()}
    else:
        listed = {n: b["pages"] for n, b in exp["blocks"].items()}
    lb = sum((v + PKT_PAGES - 1) // PKT_PAGES for v in listed.values())
    if s["data_packets"] < lb:
        e("data_packets %d < minimum %d" % (s["data_packets"], lb))
    if s["main_bytes"] <= 0:
        e("main_bytes %r" % s["main_bytes"])
    # nocomp: every RAM packet is 1344 bytes + its raw pages, plus the 64-byte
    # init message per channel.
    wire = nch * 64 + (s["data_packets"] + s["sync_packets"]) * HDR + s["normal_pages"] * P
    if s["data_bytes"] != wire:
        e("data_bytes %d != %d (64 x channels + 1344 x packets + 4096 x normal_pages)"
          % (s["data_bytes"], wire))
    for f in ("total_time_us", "setup_time_us", "throughput_gbps"):
        if not isinstance(s[f], (int, float)) or s[f] < 0:
            e("%s %r" % (f, s[f]))
    if s["setup_time_us"] > s["total_time_us"]:
        e("setup_time_us %d > total_time_us %d" % (s["setup_time_us"], s["total_time_us"]))
    ch = s["channel"]
    if not isinstance(ch, list) or len(ch) != nch:
        e("channel array has %s entries, expected %d"
          % (len(ch) if isinstance(ch, list) else type(ch).__name__, nch))
        return True
    bad = [c for c in ch if not all(k in c for k in CH_FIELDS)]
    if bad:
        e("channel entries missing fields: %r" % bad[0])
        return True
    ids = sorted(c["id"] for c in ch)
    if ids != list(range(nch)):
        e("channel ids %r" % ids)
    sm = lambda k: sum(c[k] for c in ch)
    if sm("normal_pages") != s["normal_pages"]:
        e("sum of channel normal_pages %d != normal_pages %d" % (sm("normal_pages"), s["normal_pages"]))
    if sm("zero_pages") != s["zero_pages"] - s["legacy_zero_pages"]:
        e("sum of channel zero_pages %d != zero_pages %d - legacy_zero_pages %d"
          % (sm("zero_pages"), s["zero_pages"], s["legacy_zero_pages"]))
    if sm("sync_packets") != s["sync_packets"]:
        e("sum of channel sync_packets %d != sync_packets %d" % (sm("sync_packets"), s["sync_packets"]))
    if sm("packets") != s["data_packets"] + s["sync_packets"]:
        e("sum of channel packets %d != data_packets %d + sync_packets %d"
          % (sm("packets"), s["data_packets"], s["sync_packets"]))
    if sm("bytes") != s["data_bytes"]:
        e("sum of channel bytes %d != data_bytes %d" % (sm("bytes"), s["data_bytes"]))
    for c in ch:
        if c["sync_packets"] != s["iterations"]:
            e("channel %r: sync_packets %r != iterations %r"
              % (c["id"], c["sync_packets"], s["iterations"]))
            break
    return True

ok_s = check(src, "source", "source")
ok_d = check(dst, "destination", "destination")
if ok_s and ok_d:
    for k in ("normal_pages", "zero_pages", "legacy_zero_pages", "data_packets",
              "sync_packets", "iterations", "ram_bytes", "data_bytes"):
        if src[k] != dst[k]:
            errs.append("%s: source %r != destination %r" % (k, src[k], dst[k]))
    sch = {c["id"]: c for c in src["channel"]}
    for c in dst["channel"]:
        o = sch.get(c["id"])
        if o is None:
            continue
        for k in ("packets", "normal_pages", "zero_pages", "bytes"):
            if o[k] != c[k]:
                errs.append("channel %r %s: source %r != destination %r"
                            % (c["id"], k, o[k], c[k]))
                break
print("\n".join(errs))
PYEOF
)
    [ -z "$STATS_ERRS" ]
}

# Reports the result of check_stats as one PASS/FAIL line.
report_stats() {
    local tag=$1
    if [ -z "$STATS_ERRS" ]; then
        pass "$tag"
    else
        fail "$tag" "$(echo "$STATS_ERRS" | head -n 6 | paste -sd';' -)"
    fi
}

# xxh3 FILE: prints the XXH3-64 digest of FILE as 16 lowercase hex digits,
# whatever the xxhsum version's output format ("XXH3 (stdin) = H" in 0.8.1,
# "XXH3_H  stdin" in later ones).
xxh3() {
    xxhsum -H3 <"$1" | grep -oE '[0-9a-f]{16}' | head -n 1
}

E2E_NS=
E2E_VETH=
E2E_IN_NS=

e2e_netns_up() {
    local net=$1 bin=$2
    E2E_NS=mfd-$E2E_NAME-$$
    E2E_VETH=mfa$$
    local peer=mfb$$
    ip netns add "$E2E_NS" 2>/dev/null || return 1
    ip link add "$E2E_VETH" type veth peer name "$peer" 2>/dev/null || return 1
    ip link set "$peer" netns "$E2E_NS" &&
        ip addr add "10.$net.0.1/30" dev "$E2E_VETH" &&
        ip link set "$E2E_VETH" up &&
        ip netns exec "$E2E_NS" ip addr add "10.$net.0.2/30" dev "$peer" &&
        ip netns exec "$E2E_NS" ip link set "$peer" up &&
        ip netns exec "$E2E_NS" ip link set lo up || return 1
    E2E_IN_NS=$E2E_TMP/multifd-in-ns
    printf '#!/bin/sh\nexec ip netns exec %s %s "$@"\n' "$E2E_NS" "$bin" \
        >"$E2E_IN_NS" && chmod +x "$E2E_IN_NS"
}

e2e_netns_down() {
    [ -n "$E2E_NS" ] || return 0
    ip netns del "$E2E_NS" 2>/dev/null
    ip link del "$E2E_VETH" 2>/dev/null
    E2E_NS=
}
