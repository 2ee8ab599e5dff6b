#!/bin/sh
# Builds the libFuzzer targets (clang, ASan+UBSan, build-fuzz/) and runs each
# for SECONDS (default 60), on a corpus kept in build-fuzz/corpus/TARGET
# seeded from real data: a snapshot written by `multifd save`, and the
# main and data channels of real migrations with each method, recorded by
# scripts/fuzz_seeds.py. A crash, a
# leak or a sanitizer report fails the run and leaves the input in
# build-fuzz/crash-*; rerun one with `build-fuzz/fuzz_TARGET FILE`.
# Usage: scripts/fuzz.sh [SECONDS]
set -eu
SECS=${1:-60}
B=build-fuzz
CC=clang cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMFD_FUZZ=ON \
    -DMFD_WERROR=OFF >/dev/null
cmake --build "$B" -j"$(nproc)"
for t in wire snapshot main; do mkdir -p "$B/corpus/$t"; done

# Seeds from the real tool: a small snapshot of two blocks (data and zero
# pages; the snapshot's pages region makes it 3 MiB, mostly holes).
if [ ! -f "$B/corpus/snapshot/seed.snap" ]; then
    d=$(mktemp -d)
    head -c 65536 /dev/urandom >"$d/ram"
    truncate -s 32768 "$d/rom"
    printf 'rom' | dd of="$d/rom" bs=1 seek=8192 conv=notrunc 2>/dev/null
    build/tools/multifd save --to "file:$B/corpus/snapshot/seed.snap" \
        --channels 2 "$d/ram" "$d/rom" >/dev/null
    rm -rf "$d"
fi

# Real streams: every method's data channels and the main channel.
if [ ! -f "$B/corpus/wire/hello" ]; then
    python3 scripts/fuzz_seeds.py build/tools/multifd "$B/corpus"
fi

# A hand-written main channel with what the recorded ones lack: preamble, HELLO
# (2 channels), a block, SETUP_END, a pass's end, the device state, COMPLETE.
if [ ! -f "$B/corpus/main/seed" ]; then
    python3 - "$B/corpus/main/seed" <<'PYEOF'
import struct, sys
def rec(t, body=b""):
    return struct.pack(">II", t, len(body)) + body + b"\0" * ((-len(body)) % 8)
out = struct.pack(">II", 0x4D464443, 1) + b"\0" * 8
out += rec(1, bytes(range(16)) + struct.pack(">IIIIiIQII", 4096, 128, 2, 0, 0, 2, 0, 1, 0))
out += rec(2, struct.pack(">QII", 1 << 20, 0, 3) + b"ram")
out += rec(3)
out += rec(0x10, struct.pack(">IIQ", 0, 1, 4096))
out += rec(0x11, struct.pack(">Q", 1))
out += rec(0x20, struct.pack(">I", 1) + b"dev")
out += rec(0x22, struct.pack(">QQQ", 0, 1, 0))
open(sys.argv[1], "wb").write(out)
PYEOF
fi

fail=0
for t in wire snapshot main; do
    echo "fuzz: $t for ${SECS}s"
    if ! (cd "$B" && ASAN_OPTIONS=detect_leaks=1 "./fuzz_$t" \
        -max_total_time="$SECS" -max_len=4200000 -rss_limit_mb=4096 \
        -print_final_stats=1 "corpus/$t" >"fuzz_$t.log" 2>&1); then
        echo "fuzz: $t FAILED; the end of its log:"
        tail -40 "$B/fuzz_$t.log"
        fail=1
    else
        grep -E "stat::number_of_executed_units|Done" "$B/fuzz_$t.log" | tail -1
    fi
done
if [ "$fail" = 0 ]; then echo "fuzz: 3 passed, 0 failed"; else echo "fuzz: failed"; fi
exit "$fail"
