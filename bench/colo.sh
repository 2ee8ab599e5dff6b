#!/usr/bin/env bash
# COLO checkpoint costs, the seed's table on this machine: a 1 GiB guest,
# checkpoint every 600 ms, idle (writers at 1 MiB/s) and under load (256
# MiB/s), 1 channel vs 4, staging on (default) and off; mean and p99 of the
# memory-transfer time (CHECKPOINT_BEGIN to ACK) and of the writers' pause,
# over CHECKPOINTS checkpoints each (default 200).
# Usage: bench/colo.sh PATH-TO-multifd   (env: CHECKPOINTS, SIZE, LOAD)
set -eu
MULTIFD=${1:?usage: $0 PATH-TO-multifd}
N=${CHECKPOINTS:-200}
SIZE=${SIZE:-1G}
LOAD=${LOAD:-256M}
echo "# multifd colo: $SIZE guest, checkpoint every 600 ms, $N checkpoints per row"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: CHECKPOINTS=$N SIZE=$SIZE LOAD=$LOAD bash bench/colo.sh $MULTIFD"
echo
echo "| load | channels | staging | transfer mean ms | transfer p99 ms | transfer p99 from checkpoint 3 | pause mean ms | pause p99 ms | dirty MiB per checkpoint (mean) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
row() {
    local name=$1 rate=$2 ch=$3 staging=$4 out
    out=$(mktemp)
    if ! "$MULTIFD" colo --size "$SIZE" --dirty-rate "$rate" --channels "$ch" \
        --colo-staging "$staging" --checkpoints "$N" --checkpoint-interval 600 >"$out" 2>&1; then
        echo "bench/colo.sh: multifd colo failed ($name, $ch channels, staging $staging):" >&2
        tail -5 "$out" >&2
        rm -f "$out"
        exit 1
    fi
    python3 - "$out" "$name" "$ch" "$staging" <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read()
def stat(what):
    m = re.search(r"%s\s+mean\s+([\d.]+) ms\s+p99\s+([\d.]+) ms" % what, text)
    return m.group(1), m.group(2)
mib = [float(x) for x in re.findall(r"dirty pages, ([\d.]+) MiB", text)]
t, p = stat("transfer"), stat("pause")
# Checkpoints 1-2 carry the initial migration's remainder (up to a
# downtime-limit's worth) and what was dirtied meanwhile: the p99 from
# checkpoint 3 on is the steady state's.
steady = sorted(float(y) for n, y in re.findall(r"checkpoint (\d+): pause [\d.]+ ms, transfer ([\d.]+) ms", text)
                if int(n) >= 3)
# nearest rank, as multifd colo computes its p99
sp99 = steady[-(-99 * len(steady) // 100) - 1] if steady else float("nan")
print("| %s | %s | %s | %s | %s | %.2f | %s | %s | %.1f |" % (sys.argv[2], sys.argv[3], sys.argv[4],
      t[0], t[1], sp99, p[0], p[1], sum(mib) / max(len(mib), 1)))
PYEOF
    rm -f "$out"
}
row idle 1M 1 on
row idle 1M 4 on
row load "$LOAD" 1 on
row load "$LOAD" 4 on
row load "$LOAD" 1 off
row load "$LOAD" 4 off
