#!/usr/bin/env bash
# Live migration end to end, real processes:
#   demo-*:     `multifd demo` (writers dirty a self-checking guest while it
#               migrates to a child process; every page compared with the
#               source at the pause) with each tracker and zero-page mode,
#               and --progress json: one object per pass, as many as passes;
#               auto-converge: the throttle rises in QEMU's steps until a
#               guest that outruns the capped bandwidth converges.
#   kill-dest:  the destination (`multifd recv`) is SIGKILLed mid-pass: the
#               live source fails within 10 s with one error line, its
#               writers run again, its memory is intact; a second migration
#               of a new guest to a new destination then succeeds.
#   netcut:     source and destination in two network namespaces joined by
#               a veth pair; the link goes down mid-pass: both sides fail
#               within network-timeout (3 s) plus slack, the source resumes
#               its writers with its memory intact; with the link back up a
#               second migration succeeds. Skipped where `ip netns` cannot
#               be used (not root, no netns support).
# Usage: live.sh PATH-TO-multifd
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init live "${1:-}"

# ---- the demo, live ---------------------------------------------------------

demo_case() {
    local tag=$1
    shift
    run_fg "$tag" "$E2E_PROC_TIMEOUT" "$MULTIFD" demo --size 256M "$@"
    check_stderr_clean "$tag" "$E2E_TMP/$tag.err" || return
    if [ "$FG_RC" -ne 0 ]; then
        fail "$tag" "demo exited $FG_RC"
        show_file "$E2E_TMP/$tag.err"
        return
    fi
    if ! grep -q 'verified: all 65536 pages equal' "$E2E_TMP/$tag.out"; then
        fail "$tag" "no verification line"
        show_file "$E2E_TMP/$tag.out" 30
        return
    fi
    pass "$tag"
}

demo_case demo-uffd-wp --writers 2 --dirty-rate 128M
demo_case demo-manual-legacy --writers 2 --dirty-rate 128M \
    --dirty-tracker manual --zero-page-detection legacy
demo_case demo-1ch-none --writers 1 --dirty-rate 64M --channels 1 \
    --zero-page-detection none
# Dirty rate above the capped bandwidth: only max-iterations ends it.
demo_case demo-forced --writers 2 --dirty-rate 256M --max-bandwidth 128M \
    --max-iterations 3
demo_case demo-forced-manual --writers 2 --dirty-rate 256M \
    --max-bandwidth 128M --max-iterations 3 --dirty-tracker manual
for t in demo-forced demo-forced-manual; do
    if [ -s "$E2E_TMP/$t.out" ] &&
        ! grep -q '4 pass(es)' "$E2E_TMP/$t.out"; then
        fail "$t-passes" "expected 3 live passes and the final one"
        grep 'pass' "$E2E_TMP/$t.out" | head -n 8
    fi
done

tag=demo-progress-json
run_fg "$tag" "$E2E_PROC_TIMEOUT" "$MULTIFD" demo --size 128M --writers 1 \
    --dirty-rate 64M --progress json --json
if [ "$FG_RC" -ne 0 ]; then
    fail "$tag" "demo exited $FG_RC"
    show_file "$E2E_TMP/$tag.err"
else
    python3 - "$E2E_TMP/$tag.out" >"$E2E_TMP/$tag.py" 2>&1 <<'EOF'
import json, sys
passes, final = [], None
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    o = json.loads(line)
    if "pass" in o:
        passes.append(o)
    elif o.get("role") == "source":
        final = o
assert final, "no final stats object"
assert passes, "no pass objects"
assert [p["pass"] for p in passes] == list(range(1, len(passes) + 1)), "pass numbers"
assert passes[-1]["final"] and not any(p["final"] for p in passes[:-1]), "final flag"
assert len(passes) == final["iterations"], "passes %d vs iterations %d" % (len(passes), final["iterations"])
assert sum(p["pages"] for p in passes) == final["normal_pages"] + final["zero_pages"], "pages"
assert final["progress_pct"] == 100 and final["downtime_us"] > 0, "progress/downtime"
assert [p["pages"] for p in final["passes"]] == [p["pages"] for p in passes], "per-pass pages"
print("ok")
EOF
    if grep -qx ok "$E2E_TMP/$tag.py"; then
        pass "$tag"
    else
        fail "$tag" "$(tail -n 1 "$E2E_TMP/$tag.py")"
    fi
fi

# auto-converge: the writers outrun the capped bandwidth until the
# throttle (initial 20%, then +30% every second high pass) slows them.
tag=demo-auto-converge
run_fg "$tag" "$E2E_PROC_TIMEOUT" "$MULTIFD" demo --size 32M --writers 1 \
    --dirty-rate 256M --max-bandwidth 64M --auto-converge \
    --cpu-throttle-increment 30 --downtime-limit 50 --progress json --json
if [ "$FG_RC" -ne 0 ]; then
    fail "$tag" "demo exited $FG_RC"
    show_file "$E2E_TMP/$tag.err"
else
    python3 - "$E2E_TMP/$tag.out" >"$E2E_TMP/$tag.py" 2>&1 <<'EOF2'
import json, sys
passes = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{"pass"')]
thr = [p["throttle_pct"] for p in passes if not p["final"]]
assert thr == sorted(thr), "throttle went down: %s" % thr
assert 0 in thr and max(thr) >= 50, "throttle never rose: %s" % thr
steps = sorted(set(thr))
assert steps[:3] == [0, 20, 50][:len(steps)], "steps %s" % steps
print("ok", thr)
EOF2
    if grep -q '^ok' "$E2E_TMP/$tag.py"; then
        pass "$tag: throttle per pass $(sed 's/^ok //' "$E2E_TMP/$tag.py")"
    else
        fail "$tag" "$(tail -n 1 "$E2E_TMP/$tag.py")"
    fi
fi

# ---- failure mid-pass ------------------------------------------------------

# mid_pass TAG: waits (up to 60 s) until the demo's first pass runs: it
# announced the migration and sent for a second. A slow build may take
# longer than that to make its guest; a failure before the migration (a
# refused connection) would prove nothing.
mid_pass() {
    local out=$E2E_TMP/$1.out i
    for i in $(seq 1 600); do
        grep -q 'live migration over' "$out" 2>/dev/null && break
        sleep 0.1
    done
    sleep 1
}

# check_failed_source TAG: the demo's stderr after a failure.
check_failed_source() {
    local tag=$1 err=$E2E_TMP/$1.err
    local lines
    lines=$(grep -c 'multifd demo: error:' "$err")
    if [ "$lines" -ne 1 ]; then
        fail "$tag" "expected one error line, got $lines"
        show_file "$err"
        return 1
    fi
    if ! grep -q 'writers resumed after the failure' "$err"; then
        fail "$tag" "writers not resumed"
        show_file "$err"
        return 1
    fi
    if grep -q 'demo: error: connect to' "$err"; then
        fail "$tag" "failed before the migration ran (connect)"
        show_file "$err"
        return 1
    fi
    if ! grep -q 'guest memory intact (0 of' "$err"; then
        fail "$tag" "source memory not intact"
        show_file "$err"
        return 1
    fi
    return 0
}

# second_migration TAG NETNS-PREFIX... LISTEN: a new destination, a new
# guest, no cap: must succeed.
second_migration() {
    local tag=$1 listen=$2
    shift 2
    if ! start_recv "$tag.recv" "$@" --listen "$listen" --into anon:; then
        fail "$tag" "$RECV_WHY"
        return
    fi
    run_fg "$tag" "$E2E_PROC_TIMEOUT" "$MULTIFD" demo --to "$RECV_URI" \
        --size 64M --writers 1 --dirty-rate 32M --channels 2
    bg_wait "$RECV_PID" 20
    if [ "$FG_RC" -ne 0 ] || [ "$BG_RC" -ne 0 ] ||
        ! grep -q 'verified by the destination' "$E2E_TMP/$tag.out"; then
        fail "$tag" "second migration: demo $FG_RC, recv $BG_RC"
        show_file "$E2E_TMP/$tag.err"
        show_file "$E2E_TMP/$tag.recv.err"
        return
    fi
    pass "$tag"
}

tag=kill-dest
if start_recv "$tag.recv" --listen tcp:127.0.0.1:0 --into anon:; then
    bg_start "$tag" "$E2E_PROC_TIMEOUT" "$MULTIFD" demo --to "$RECV_URI" \
        --size 256M --writers 1 --dirty-rate 32M --channels 2 \
        --max-bandwidth 40M
    spid=$BG_PID
    mid_pass "$tag"
    kill -KILL "$RECV_CHILD" 2>/dev/null
    t0=$(now_ms)
    bg_wait "$spid" 10
    dt=$(($(now_ms) - t0))
    if [ "$BG_RC" -eq 124 ]; then
        fail "$tag" "source still running 10 s after the kill"
    elif [ "$BG_RC" -ne 1 ]; then
        fail "$tag" "source exited $BG_RC (want 1)"
        show_file "$E2E_TMP/$tag.err"
    elif check_failed_source "$tag"; then
        pass "$tag (source failed ${dt} ms after the kill)"
    fi
    bg_wait "$RECV_PID" 5
    second_migration kill-dest-again tcp:127.0.0.1:0
else
    fail "$tag" "$RECV_WHY"
fi

# ---- the network cut between two namespaces ----------------------------------

tag=netcut
real=$MULTIFD
if ! command -v ip >/dev/null || ! e2e_netns_up 231 "$real"; then
    e2e_netns_down
    skip "$tag" "cannot create a network namespace and veth pair here"
else
    # start_recv runs $MULTIFD: the wrapper runs it inside the namespace.
    MULTIFD=$E2E_IN_NS
    if start_recv "$tag.recv" --listen tcp:10.231.0.2:0 --into anon: \
        --network-timeout 3000; then
        MULTIFD=$real
        rpid=$RECV_PID
        bg_start "$tag" "$E2E_PROC_TIMEOUT" "$MULTIFD" demo --to "$RECV_URI" \
            --size 256M --writers 1 --dirty-rate 32M --channels 2 \
            --max-bandwidth 40M --network-timeout 3000
        spid=$BG_PID
        mid_pass "$tag"
        ip link set "$E2E_VETH" down
        t0=$(now_ms)
        bg_wait "$spid" 20
        dt=$(($(now_ms) - t0))
        if [ "$BG_RC" -eq 124 ]; then
            fail "$tag" "source still running 20 s after the cut"
        elif [ "$BG_RC" -ne 1 ]; then
            fail "$tag" "source exited $BG_RC (want 1)"
            show_file "$E2E_TMP/$tag.err"
        elif [ "$dt" -gt 12000 ]; then
            fail "$tag" "source took $dt ms to fail (network-timeout 3000)"
        elif check_failed_source "$tag"; then
            pass "$tag: source failed ${dt} ms after the cut: $(grep 'demo: error' "$E2E_TMP/$tag.err" | head -n 1)"
        fi
        bg_wait "$rpid" 15
        if [ "$BG_RC" -eq 124 ]; then
            fail "$tag-dest" "destination still running 15 s after the source failed"
        elif [ "$BG_RC" -eq 0 ]; then
            fail "$tag-dest" "destination reported success"
        else
            pass "$tag-dest: $(grep 'error' "$E2E_TMP/$tag.recv.err" | head -n 1)"
        fi
        ip link set "$E2E_VETH" up
        sleep 0.5
        MULTIFD=$E2E_IN_NS
        if start_recv "$tag-again.recv" --listen tcp:10.231.0.2:0 \
            --into anon:; then
            MULTIFD=$real
            run_fg "$tag-again" "$E2E_PROC_TIMEOUT" "$MULTIFD" demo \
                --to "$RECV_URI" --size 64M --writers 1 --dirty-rate 32M \
                --channels 2
            bg_wait "$RECV_PID" 20
            if [ "$FG_RC" -eq 0 ] && [ "$BG_RC" -eq 0 ] &&
                grep -q 'verified by the destination' "$E2E_TMP/$tag-again.out"; then
                pass "$tag-again"
            else
                fail "$tag-again" "demo $FG_RC, recv $BG_RC"
                show_file "$E2E_TMP/$tag-again.err"
            fi
        else
            MULTIFD=$real
            fail "$tag-again" "$RECV_WHY"
        fi
    else
        MULTIFD=$real
        fail "$tag" "$RECV_WHY"
    fi
    e2e_netns_down
fi

e2e_finish
