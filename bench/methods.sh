#!/usr/bin/env bash
# Compression and zero-copy benchmark: `multifd bench` (a paused guest, two
# processes, loopback TCP, fresh anonymous destination memory, every run
# verified) for each method x content x channels; prints the median GB/s of
# guest memory (GB = 10^9 bytes), the compression ratio and the seconds
# spent compressing, as a Markdown table.
# Usage: bench/methods.sh PATH-TO-multifd   (env: SIZE, RUNS, METHODS,
#        CONTENTS, CHANNELS, EXTRA = more bench options)
set -u
BIN=${1:?usage: methods.sh PATH-TO-multifd}
SIZE=${SIZE:-4G}
RUNS=${RUNS:-3}
METHODS=${METHODS:-"none zlib zstd lz4"}
CONTENTS=${CONTENTS:-"random text half"}
CHANNELS=${CHANNELS:-"1 2"}
EXTRA=${EXTRA:-}
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT

echo "methods: $SIZE paused guest, $RUNS runs each (median), loopback TCP, fresh anonymous destination; $(nproc) CPUs, $(uname -r) $EXTRA"
echo
echo "| method | content | channels | GB/s | ratio | s compressing (source, all channels) |"
echo "| --- | --- | --- | --- | --- | --- |"
for m in $METHODS; do
    for c in $CONTENTS; do
        for ch in $CHANNELS; do
            # shellcheck disable=SC2086
            if ! "$BIN" bench --size "$SIZE" --content "$c" --channels "$ch" \
                --runs "$RUNS" --no-refs --multifd-compression "$m" $EXTRA \
                >"$tmp" 2>&1; then
                echo "| $m | $c | $ch | failed: $(grep -m1 error "$tmp") | | |"
                continue
            fi
            python3 - "$tmp" "$m" "$c" "$ch" <<'PY'
import re, statistics, sys
runs = [l for l in open(sys.argv[1]) if l.startswith("run ")]
gb = [float(re.search(r"s, ([0-9.]+) GB/s", l).group(1)) for l in runs]
ratio = [float(m.group(1)) for l in runs for m in [re.search(r"ratio ([0-9.]+)", l)] if m]
comp = [float(m.group(1)) for l in runs for m in [re.search(r"([0-9.]+) s compressing", l)] if m]
f = lambda v, fmt: (fmt % statistics.median(v)) if v else "-"
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {statistics.median(gb):.2f} | {f(ratio, '%.2f')} | {f(comp, '%.2f')} |")
PY
        done
    done
done
