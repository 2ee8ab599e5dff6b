#!/usr/bin/env bash
# Live-migration benchmark: a 1 GiB guest (`multifd demo`: mixed content,
# writers rewriting random pages, uffd-wp tracker, loopback TCP) for each
# dirty rate and channel count; prints the median over RUNS runs of total
# time, downtime (pause to DONE), passes and the rate the writers really
# dirtied (unique pages per second at the last live sync), as a Markdown
# table. Every run is verified page by page by the demo itself.
# Usage: bench/live.sh PATH-TO-multifd   (env: SIZE, RATES, CHANNELS, RUNS,
#        LIMIT = downtime-limit in ms, CAP = max-bandwidth, MAXIT =
#        max-iterations, EXTRA = more demo options)
set -u
BIN=${1:?usage: live.sh PATH-TO-multifd}
SIZE=${SIZE:-1G}
RATES=${RATES:-"0 64M 256M 1024M"}
CHANNELS=${CHANNELS:-"1 2 4"}
RUNS=${RUNS:-3}
LIMIT=${LIMIT:-300}
CAP=${CAP:-0}
MAXIT=${MAXIT:-0}
EXTRA=${EXTRA:-}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

echo "live pre-copy: $SIZE guest, downtime-limit $LIMIT ms, max-bandwidth $CAP, max-iterations $MAXIT $EXTRA, $RUNS runs each (median); $(nproc) CPUs, $(uname -r)"
echo
echo "| dirty rate asked | channels | total s | downtime ms | passes | guest wrote MiB/s | dirtied MiB/s (last sync) | bandwidth GB/s (pass 1) | verified |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for rate in $RATES; do
    for ch in $CHANNELS; do
        : >"$tmp/runs"
        ok=yes
        for r in $(seq 1 "$RUNS"); do
            if ! "$BIN" demo --size "$SIZE" --writers 2 --dirty-rate "$rate" \
                --channels "$ch" --downtime-limit "$LIMIT" --progress json \
                --max-bandwidth "$CAP" --max-iterations "$MAXIT" $EXTRA \
                --json >"$tmp/out" 2>"$tmp/err"; then
                ok="NO (run $r: $(grep -m1 error "$tmp/err"))"
                continue
            fi
            grep -q 'verified: all' "$tmp/err" || ok="NO (run $r)"
            python3 - "$tmp/out" "$tmp/err" >>"$tmp/runs" <<'PY'
import json, re, sys
passes, final = [], None
for line in open(sys.argv[1]):
    if line.startswith("{"):
        o = json.loads(line)
        if "pass" in o: passes.append(o)
        elif o.get("role") == "source": final = o
live = [p for p in passes if not p["final"]]
m = re.search(r"(\d+) pages written by the guest", open(sys.argv[2]).read())
wrote = int(m.group(1)) * 4096 / 1048576 / (final["total_time_us"] / 1e6)
print(final["total_time_us"] / 1e6, final["downtime_us"] / 1e3,
      final["iterations"], wrote,
      live[-1]["dirty_rate_bps"] / 1048576 if live else 0,
      passes[0]["bandwidth_bps"] / 1e9)
PY
        done
        python3 - "$tmp/runs" "$rate" "$ch" "$ok" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
if not rows:
    print(f"| {sys.argv[2]} | {sys.argv[3]} | - | - | - | - | - | - | {sys.argv[4]} |"); sys.exit()
med = [statistics.median(c) for c in zip(*rows)]
print(f"| {sys.argv[2]}/s | {sys.argv[3]} | {med[0]:.2f} | {med[1]:.1f} | {med[2]:.0f} | {med[3]:.0f} | {med[4]:.0f} | {med[5]:.2f} | {sys.argv[4]} |")
PY
    done
done
