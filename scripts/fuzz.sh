#!/bin/sh
# Builds the libFuzzer targets (clang, ASan+UBSan, build-fuzz/) and runs each
# for SECONDS (default 60), on a corpus kept in build-fuzz/corpus/TARGET
# seeded from real data: a snapshot written by `multifd save`. A crash, a
# leak or a sanitizer report fails the run and leaves the input in
# build-fuzz/crash-*; rerun one with `build-fuzz/fuzz_TARGET FILE`.
# Usage: scripts/fuzz.sh [SECONDS]
set -eu
SECS=${1:-60}
B=build-fuzz
CC=clang cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMFD_FUZZ=ON \
    -DMFD_WERROR=OFF >/dev/null
cmake --build "$B" -j"$(nproc)"
for t in wire snapshot; do mkdir -p "$B/corpus/$t"; done

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

fail=0
for t in wire snapshot; do
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
if [ "$fail" = 0 ]; then echo "fuzz: 2 passed, 0 failed"; else echo "fuzz: failed"; fi
exit "$fail"
