#!/usr/bin/env bash
# Snapshot-file benchmark: `multifd save --to file:` of a source image held in
# the page cache (the "guest memory"), then `multifd restore --into anon:`
# (fresh anonymous memory) of that snapshot, for each channel count with
# --direct-io off and on. Between save and restore the page cache is dropped
# so the cold restore reads the disk; the warm restore runs right after it.
# Prints the median GB/s of guest memory (GB = 10^9 bytes of the image over
# the JSON's total_time_us) and the snapshot's allocated/apparent size as a
# Markdown table, then plain `dd` references (bs=1M) on the same disk for the
# bytes the snapshot really holds and for the whole image. Every restore is
# verified: its XXH3-64 digest must equal `xxhsum -H3` of the source image.
# Needs root (drop_caches) and a disk file system that accepts O_DIRECT.
# Usage: bench/snapshot.sh PATH-TO-multifd   (env: SIZE (default 2G; K/M/G
#        suffixes, a multiple of 2 MiB), CONTENT = "half" and/or "random",
#        CHANNELS, DIRECT = "off on", RUNS, WARM = 0 to skip warm restores,
#        DIR = where the temp dir goes (default /var/tmp, must be on disk))
set -u
BIN=${1:?usage: snapshot.sh PATH-TO-multifd}
SIZE=${SIZE:-2G}
CONTENT=${CONTENT:-half}
CHANNELS=${CHANNELS:-"1 2 4"}
DIRECT=${DIRECT:-"off on"}
RUNS=${RUNS:-3}
WARM=${WARM:-1}
DIR=${DIR:-/var/tmp}

die() { echo "snapshot.sh: error: $*" >&2; exit 1; }

[ -x "$BIN" ] || die "$BIN is not an executable"
[ "$(id -u)" = 0 ] || die "needs root (echo 3 > /proc/sys/vm/drop_caches)"
for t in python3 xxhsum dd findmnt; do
    command -v "$t" >/dev/null || die "$t not found"
done
case $RUNS in '' | *[!0-9]* | 0) die "RUNS must be a positive integer" ;; esac
for c in $CONTENT; do
    case $c in half | random) ;; *) die "CONTENT: unknown content '$c' (half, random)" ;; esac
done
for d in $DIRECT; do
    case $d in on | off) ;; *) die "DIRECT: '$d' is neither on nor off" ;; esac
done

work=$(mktemp -d "$DIR/multifd-snapshot.XXXXXX") || die "mktemp -d in $DIR failed"
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# (the last line is the mount on top when mounts are stacked)
fstype=$(findmnt -no FSTYPE -T "$work" | tail -n1)
fsdev=$(findmnt -no SOURCE -T "$work" | tail -n1)
case $fstype/$(stat -f -c %T "$work") in
    */tmpfs | */ramfs) die "$work is on tmpfs/ramfs, not a disk: set DIR to a disk file system" ;;
esac
case $fstype in
    tmpfs | ramfs | "") die "$work is on '$fstype', not a disk: set DIR to a disk file system" ;;
esac

bytes=$(python3 -c '
import sys
s = sys.argv[1].strip().upper().removesuffix("B").removesuffix("I")
mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
n = int(s[:-1]) * mult[s[-1]] if s and s[-1] in mult else int(s)
print(n)' "$SIZE" 2>/dev/null) || die "SIZE: cannot parse '$SIZE'"
if [ "$bytes" -le 0 ] || [ $((bytes % (2 << 20))) -ne 0 ]; then
    die "SIZE must be a positive multiple of 2 MiB (got $SIZE = $bytes bytes)"
fi

avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
if [ $((avail_kb * 1024)) -lt $((bytes * 3)) ]; then
    echo "snapshot.sh: warning: $((avail_kb / 1024)) MiB available, the run wants ~3x $SIZE (source in cache, snapshot in cache, restored memory)" >&2
fi

# The helper: parses `multifd --json` output, parses dd, formats rows.
cat >"$work/h.py" <<'PY'
import json, re, statistics, sys

def load(path):
    objs = [json.loads(l) for l in open(path) if l.lstrip().startswith("{")]
    if not objs:
        sys.exit(f"no JSON object in the output ({path})")
    return objs[-1]

mode = sys.argv[1]
if mode == "save":                      # FILE BYTES -> time_us normal zero page_size
    o, n = load(sys.argv[2]), int(sys.argv[3])
    if o.get("status") != "completed":
        sys.exit(f"save status {o.get('status')!r}")
    if (o["normal_pages"] + o["zero_pages"]) * o["page_size"] != n:
        sys.exit(f"save: {o['normal_pages']} normal + {o['zero_pages']} zero pages "
                 f"of {o['page_size']} != {n} bytes")
    print(o["total_time_us"], o["normal_pages"], o["zero_pages"], o["page_size"])
elif mode == "restore":                 # FILE BYTES NAME DIGEST -> time_us
    o, n, name, want = load(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    if o.get("status") != "completed":
        sys.exit(f"restore status {o.get('status')!r}")
    if (o["normal_pages"] + o["zero_pages"]) * o["page_size"] != n:
        sys.exit(f"restore: {o['normal_pages']} normal + {o['zero_pages']} zero "
                 f"pages of {o['page_size']} != {n} bytes")
    got = o.get("digests", {}).get(name)
    if got is None:
        sys.exit(f"restore printed no digest for block {name!r}: {o.get('digests')}")
    if int(got, 16) != int(want, 16):
        sys.exit(f"DIGEST MISMATCH for {name}: restored {got}, source {want}")
    print(o["total_time_us"])
elif mode == "dd":                      # ERRFILE -> bytes seconds
    txt = open(sys.argv[2]).read()
    m = re.search(r"^(\d+) bytes .*copied, ([0-9.eE+-]+) s", txt, re.M)
    if not m:
        sys.exit(f"cannot parse dd output: {txt!r}")
    print(m.group(1), m.group(2))
elif mode == "row":                     # RESULTS CH DIO BYTES WARM
    path, ch, dio, n, warm = sys.argv[2:7]
    n, warm = int(n), warm == "1"
    kind = {}
    alloc = app = 0
    for l in open(path):
        f = l.split()
        if f[0] == "size":
            alloc, app = int(f[1]), int(f[2])
        else:
            kind.setdefault(f[0], []).append((int(f[1]), int(f[2])))
    def gbps(k):
        v = [n / (us * 1e3) for us, _ in kind.get(k, [])]
        if not v:
            return "-"
        return f"{statistics.median(v):.2f} ({' '.join(f'{x:.2f}' for x in v)})"
    def secs(k):
        v = kind.get(k, [])
        if not v:
            return "-"
        return (f"{statistics.median(us for us, _ in v) / 1e6:.2f} / "
                f"{statistics.median(w for _, w in v) / 1e6:.2f}")
    print(f"| {ch} | {dio} | {gbps('save')} | {gbps('cold')} | "
          f"{gbps('warm') if warm else '-'} | "
          f"{alloc / 2**20:.0f} / {app / 2**20:.0f} MiB ({100 * alloc / app:.0f}%) |")
    print(f"| {ch} | {dio} | {secs('save')} | {secs('cold')} | "
          f"{secs('warm') if warm else '-'} |", file=sys.stderr)
elif mode == "ddrow":                   # RESULTS WHAT
    path, what = sys.argv[2:4]
    v = [(int(a), float(b)) for a, b in (l.split() for l in open(path))]
    g = [b / s / 1e9 for b, s in v]
    print(f"| {what} | {v[0][0]} ({v[0][0] / 2**20:.0f} MiB) | "
          f"{statistics.median(g):.2f} ({' '.join(f'{x:.2f}' for x in g)}) |")
PY

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches || die "cannot drop the page cache"
}

# Reads the source image into the page cache (untimed) and checks it stayed.
warm_source() {
    cat "$img" >/dev/null || die "cannot read $img"
    if command -v fincore >/dev/null; then
        local res
        res=$(fincore -bno RES "$img" 2>/dev/null | tr -d ' ')
        if [ -n "$res" ] && [ "$res" -lt "$bytes" ]; then
            echo "snapshot.sh: warning: only $res of $bytes bytes of the source are in the page cache" >&2
        fi
    fi
}

now_us() { echo $(($(date +%s%N) / 1000)); }

# run_multifd OUT -- ARGS...: runs multifd, dies loudly on failure; sets $wall.
run_multifd() {
    local out=$1 t0
    shift
    t0=$(now_us)
    if ! "$BIN" "$@" >"$out" 2>"$out.err"; then
        cat "$out.err" >&2
        die "multifd $* failed (exit status above)"
    fi
    wall=$(($(now_us) - t0))
}

# dd_run RESULTS ARGS...: one timed dd; appends "bytes seconds".
dd_run() {
    local res=$1
    shift
    LC_ALL=C dd "$@" 2>"$work/dd.err" || { cat "$work/dd.err" >&2; die "dd $* failed"; }
    python3 "$work/h.py" dd "$work/dd.err" >>"$res" || die "dd $* output"
}

model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo "snapshot files: $SIZE image ($bytes bytes) in the page cache saved with \`multifd save --to file:\`, restored with \`multifd restore --into anon:\` (page cache dropped before the cold restore); $RUNS runs each (median, then every run); every restore verified against \`xxhsum -H3\`"
echo "machine: $(nproc) CPUs ($model), kernel $(uname -r), $fstype on $fsdev ($work), $(awk '/^MemTotal:/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo)"
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "command: SIZE=$SIZE CONTENT=\"$CONTENT\" CHANNELS=\"$CHANNELS\" DIRECT=\"$DIRECT\" RUNS=$RUNS WARM=$WARM bash bench/snapshot.sh $BIN"

img=$work/guest.img
name=guest.img
snap=$work/snap
for content in $CONTENT; do
    rm -f "$img" "$snap" "$work/dd.out"
    python3 - "$img" "$bytes" "$content" <<'PY' || die "cannot write the source image"
import os, sys
path, n, content = sys.argv[1], int(sys.argv[2]), sys.argv[3]
run = 2 << 20
zero = bytes(run)
with open(path, "wb") as f:
    for i in range(n // run):
        # half: 2 MiB of random, 2 MiB of zeros, alternating
        f.write(zero if content == "half" and i % 2 else os.urandom(run))
PY
    sync
    warm_source
    want=$(xxhsum -H3 "$img" 2>/dev/null | awk '{print $NF}')
    [ -n "$want" ] || die "xxhsum -H3 printed nothing"

    echo
    echo "### content: $content (source XXH3 $want)"
    echo
    echo "| channels | direct-io | save GB/s (median, runs) | restore cold GB/s | restore warm GB/s | file allocated / apparent |"
    echo "| --- | --- | --- | --- | --- | --- |"
    : >"$work/seconds"
    data_bytes=
    for dio in $DIRECT; do
        diof=
        [ "$dio" = on ] && diof=--direct-io
        for ch in $CHANNELS; do
            res=$work/res
            : >"$res"
            for r in $(seq 1 "$RUNS"); do
                rm -f "$snap"
                warm_source
                sync
                # shellcheck disable=SC2086
                run_multifd "$work/out" save --to "file:$snap" --channels "$ch" $diof --json "$img"
                read -r us normal _ psize < <(python3 "$work/h.py" save "$work/out" "$bytes") ||
                    die "save ch=$ch direct-io=$dio run $r: bad output"
                [ -n "${us:-}" ] || die "save ch=$ch direct-io=$dio run $r: bad output"
                echo "save $us $wall" >>"$res"
                data_bytes=$((normal * psize))
                alloc=$(($(stat -c '%b * %B' "$snap")))
                apparent=$(stat -c %s "$snap")
                kinds=cold
                [ "$WARM" = 1 ] && kinds="cold warm"
                for k in $kinds; do
                    [ "$k" = cold ] && drop_caches
                    # shellcheck disable=SC2086
                    run_multifd "$work/out" restore --from "file:$snap" --into anon: \
                        --channels "$ch" $diof --json
                    us=$(python3 "$work/h.py" restore "$work/out" "$bytes" "$name" "$want") ||
                        die "restore ($k) ch=$ch direct-io=$dio run $r: verification failed (see above)"
                    echo "$k $us $wall" >>"$res"
                done
            done
            echo "size $alloc $apparent" >>"$res"
            python3 "$work/h.py" row "$res" "$ch" "$dio" "$bytes" "$WARM" 2>>"$work/seconds"
        done
    done
    echo
    echo "snapshot holds $data_bytes bytes of data ($((data_bytes / 1048576)) MiB non-zero pages) of $bytes; the file's apparent size adds the header and bitmaps."
    if [ "$WARM" = 1 ]; then
        echo "With direct-io on, reads bypass the page cache: the \"warm\" restore reads the disk again."
    fi
    echo
    echo "Seconds, median: multifd's total_time_us / the whole process (exec, mmap, validation, exit included):"
    echo
    echo "| channels | direct-io | save s | restore cold s | restore warm s |"
    echo "| --- | --- | --- | --- | --- |"
    cat "$work/seconds"

    # dd references on the same disk: the data bytes and the whole image.
    echo
    echo "| dd reference (bs=1M, same disk) | bytes | GB/s (median, runs) |"
    echo "| --- | --- | --- |"
    sizes=$data_bytes
    [ "$data_bytes" != "$bytes" ] && sizes="$data_bytes $bytes"
    for n in $sizes; do
        [ "$n" -gt 0 ] || continue
        : >"$work/w"; : >"$work/wd"; : >"$work/rc"; : >"$work/rd"
        for r in $(seq 1 "$RUNS"); do
            warm_source
            rm -f "$work/dd.out"; sync
            dd_run "$work/w" if="$img" of="$work/dd.out" bs=1M iflag=count_bytes count="$n" conv=fdatasync
            rm -f "$work/dd.out"; sync
            dd_run "$work/wd" if="$img" of="$work/dd.out" bs=1M iflag=count_bytes count="$n" oflag=direct conv=fdatasync
            drop_caches
            dd_run "$work/rc" if="$work/dd.out" of=/dev/null bs=1M
            dd_run "$work/rd" if="$work/dd.out" of=/dev/null bs=1M iflag=direct
        done
        python3 "$work/h.py" ddrow "$work/w" "write, conv=fdatasync (source in cache)"
        python3 "$work/h.py" ddrow "$work/wd" "write, oflag=direct conv=fdatasync"
        python3 "$work/h.py" ddrow "$work/rc" "read after drop_caches"
        python3 "$work/h.py" ddrow "$work/rd" "read, iflag=direct"
    done
    rm -f "$work/dd.out" "$snap"
done
