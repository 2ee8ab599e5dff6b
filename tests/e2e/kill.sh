#!/usr/bin/env bash
# Peers killed with SIGKILL mid-migration (real processes, 1 channel, a large
# random block so that there is time to kill):
#   kill-source: the source is killed -> recv exits 1 within 10 s with exactly
#                one `multifd recv: error:` line on stderr;
#   kill-dest:   the destination is killed -> send exits 1 within 10 s with
#                exactly one `multifd send: error:` line on stderr.
# "Mid-migration" is established by watching the destination file grow: the
# kill happens once it holds >= 3% of the block and only counts if it held
# < 90% (so DONE cannot have been sent). If a migration finishes before that,
# the attempt is repeated with a block twice as large (up to 4x), then
# reported as SKIP.
# Usage: kill.sh PATH-TO-multifd   (E2E_KILL_MB: first block size, MiB)
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init kill "${1:-}"

MB=${E2E_KILL_MB:-1024}
MAX_MB=$((MB * 4))
CHUNK_MB=64

# Data on tmpfs when it has room for source + destination (fast to make and
# to receive), else in the ordinary temp dir.
BASE=$E2E_TMP
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    avail_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')
    if [ -n "$avail_kb" ] && [ "$avail_kb" -gt $((MAX_MB * 1024 * 2 + 512 * 1024)) ]; then
        if d=$(e2e_tmpdir /dev/shm); then
            e2e_register_dir "$d"
            BASE=$d
        fi
    fi
fi
SRC=$BASE/big.ram
CHUNK=$BASE/chunk
CUR_MB=0

# grow_to MB: extends $SRC with copies of one random 64 MiB chunk (pages are
# all non-zero, so every page travels as data). Fast: about 0.5 s per GiB.
grow_to() {
    local want=$1
    if [ ! -s "$CHUNK" ]; then
        head -c $((CHUNK_MB * 1024 * 1024)) /dev/urandom >"$CHUNK" || return 1
    fi
    while [ "$CUR_MB" -lt "$want" ]; do
        cat "$CHUNK" >>"$SRC" || return 1
        CUR_MB=$((CUR_MB + CHUNK_MB))
    done
}

# attempt KIND TAG: one migration with a kill. Sets ATTEMPT to
#   verdict (a verdict was reported), fast (finished before the kill: retry).
attempt() {
    local kind=$1 tag=$2
    local dst=$BASE/dst-$tag size=$((CUR_MB * 1024 * 1024))
    rm -rf "$dst"
    mkdir -p "$dst"
    ATTEMPT=verdict
    if ! start_recv "$tag.recv" --listen tcp:127.0.0.1:0 --into "$dst"; then
        fail "$tag/recv-start" "$RECV_WHY"
        show_file "$E2E_TMP/$tag.recv.err"
        return
    fi
    local rpid=$RECV_PID rchild=$RECV_CHILD
    bg_start "$tag.send" "$E2E_PROC_TIMEOUT" "$MULTIFD" send --to "$RECV_URI" --channels 1 "$SRC"
    local spid=$BG_PID schild=$BG_CHILD
    if [ -z "$rchild" ] || [ -z "$schild" ]; then
        fail "$tag/start" "could not learn the process ids"
        return
    fi

    # Wait until the destination holds >= 3% of the block.
    local t0 a=0 early=
    t0=$(now_ms)
    while :; do
        a=$(alloc_bytes "$dst/big.ram")
        if [ $((a * 100)) -ge $((size * 3)) ]; then
            break
        fi
        if ! kill -0 "$spid" 2>/dev/null || ! kill -0 "$rpid" 2>/dev/null; then
            early=1
            break
        fi
        if [ $(($(now_ms) - t0)) -gt 30000 ]; then
            fail "$tag/progress" "destination file still at $a bytes after 30 s"
            return
        fi
        sleep 0.005
    done
    if [ -n "$early" ] || [ $((a * 100)) -ge $((size * 90)) ]; then
        bg_wait "$spid" 10
        local s_rc=$BG_RC
        bg_wait "$rpid" 10
        local r_rc=$BG_RC
        if [ "$s_rc" = 0 ] && [ "$r_rc" = 0 ]; then
            ATTEMPT=fast
            echo "# $tag: migration of $CUR_MB MiB finished before the kill"
        elif [ -n "$early" ]; then
            fail "$tag/early" "a peer exited before the kill (send $s_rc, recv $r_rc)"
            show_file "$E2E_TMP/$tag.send.err"
            show_file "$E2E_TMP/$tag.recv.err"
        else
            ATTEMPT=fast
            echo "# $tag: destination already at $a of $size bytes, too late to kill"
        fi
        return
    fi

    local victim_pid victim_child survivor_pid who
    if [ "$kind" = source ]; then
        victim_pid=$spid victim_child=$schild survivor_pid=$rpid who=recv
    else
        victim_pid=$rpid victim_child=$rchild survivor_pid=$spid who=send
    fi
    if ! kill -KILL "$victim_child" 2>/dev/null; then
        fail "$tag/kill" "could not kill pid $victim_child"
        return
    fi
    local tk
    tk=$(now_ms)
    echo "# $tag: killed the $kind (pid $victim_child) at $((a / 1048576)) of $CUR_MB MiB, $((tk - t0)) ms after start"
    bg_wait "$victim_pid" 5
    if bg_wait "$survivor_pid" 10; then
        local rc=$BG_RC el=$(($(now_ms) - tk))
        pass "$tag/$who-exits-in-10s"
        echo "# $tag: $who exited $rc after $el ms"
        if [ "$rc" = 1 ]; then
            pass "$tag/$who-exit-1"
        else
            fail "$tag/$who-exit-1" "$who exit $rc, expected 1"
        fi
        local err=$E2E_TMP/$tag.$who.err n
        n=$(grep -c "^multifd $who: error: " "$err")
        if [ "$n" = 1 ]; then
            pass "$tag/$who-one-error-line"
            echo "# $tag: $(grep "^multifd $who: error: " "$err")"
        else
            fail "$tag/$who-one-error-line" "$n lines 'multifd $who: error:' on stderr, expected 1"
            show_file "$err"
        fi
        check_stderr_clean "$tag/$who-stderr" "$err"
    else
        fail "$tag/$who-exits-in-10s" "$who still running 10 s after the kill"
        show_file "$E2E_TMP/$tag.$who.err"
    fi
    rm -rf "$dst"
}

# scenario KIND TAG: attempts with growing blocks until one kills mid-way.
scenario() {
    local kind=$1 tag=$2 mb=$MB
    while :; do
        if ! grow_to "$mb"; then
            fail "$tag/setup" "cannot write a $mb MiB block in $BASE"
            return
        fi
        attempt "$kind" "$tag-${CUR_MB}m"
        rm -rf "$BASE/dst-$tag-${CUR_MB}m"
        [ "$ATTEMPT" = verdict ] && return
        if [ $((CUR_MB * 2)) -gt "$MAX_MB" ]; then
            skip "$tag" "every migration (up to $CUR_MB MiB) finished before it could be killed"
            return
        fi
        mb=$((CUR_MB * 2))
    done
}

t0=$(now_ms)
if ! grow_to "$MB"; then
    fail setup "cannot write a $MB MiB block in $BASE"
    e2e_finish
fi
echo "# made a $CUR_MB MiB random block in $BASE in $(($(now_ms) - t0)) ms"
scenario source kill-source
scenario dest kill-dest
e2e_finish
