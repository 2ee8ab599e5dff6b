#!/usr/bin/env bash
# COLO (PROTOCOL.md 4) with `multifd colo`: a primary process whose writers
# keep running and a secondary process keeping a replica.
#   verify/CH/STAGING: checkpoints under live writes with 1..4 channels,
#         staging on and off; after every acknowledged checkpoint the
#         replica equals the primary's memory at that checkpoint's pause
#         (the writers also turn pages zero and back: one rewrite in eight
#         is an all-zero page).
#   parallel-commit: checkpoints of 16 MiB and more, which the secondary
#         commits on two threads (a share each, split across the blocks).
#   idle: writers stopped: checkpoints with no dirty pages.
#   manual: the manual dirty tracker.
#   kill-primary: the primary dies in the middle of a checkpoint's transfer
#         (pages sent, no CHECKPOINT_END): the secondary promotes the
#         previous checkpoint, equal to the primary's memory at its pause.
#   kill-secondary: the primary notices within the heartbeat timeout, goes
#         on unprotected, its writers keep running, its memory intact.
#   stop-secondary: the same for a secondary that hangs: the heartbeat
#         timeout is the only sign.
# Usage: colo.sh PATH-TO-multifd
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init colo "${1:-}"

# colo_case TAG EXPECT ARGS...: `multifd colo ARGS`, exit 0 and EXPECT in
# its output.
colo_case() {
    local tag=$1 expect=$2
    shift 2
    run_fg "$tag" 120 "$MULTIFD" colo --size 32M --checkpoint-interval 100 \
        --heartbeat-timeout 1000 "$@"
    if [ "$FG_RC" = 0 ] && grep -q "$expect" "$E2E_TMP/$tag.out"; then
        pass "$tag"
    elif grep -qi "userfaultfd\|uffd" "$E2E_TMP/$tag.err"; then
        skip "$tag" "$(grep -i -m1 "userfaultfd\|uffd" "$E2E_TMP/$tag.err")"
    else
        fail "$tag" "exit $FG_RC, or no '$expect' in the output"
        show_file "$E2E_TMP/$tag.out"
        show_file "$E2E_TMP/$tag.err"
    fi
    check_stderr_clean "$tag/stderr" "$E2E_TMP/$tag.err"
}

VERIFIED="the replica equalled the primary's memory at the pause"
for ch in 1 2 3 4; do
    staging=on
    [ $((ch % 2)) = 0 ] && staging=off
    colo_case "verify-$ch-$staging" "$VERIFIED" --channels "$ch" \
        --colo-staging "$staging" --checkpoints 5 --verify --dirty-rate 32M
done
colo_case parallel-commit "$VERIFIED" --size 64M --channels 4 --checkpoints 4 \
    --checkpoint-interval 400 --verify --dirty-rate 256M
colo_case idle "$VERIFIED" --writers 0 --checkpoints 3 --verify
if grep -q " 0 dirty pages" "$E2E_TMP/idle.out"; then
    pass idle/no-dirty-pages
else
    fail idle/no-dirty-pages "no checkpoint with 0 dirty pages"
fi
colo_case manual "$VERIFIED" --dirty-tracker manual --checkpoints 4 --verify

colo_case kill-primary "failover: primary killed, secondary promoted checkpoint 3 (expected 3).*: ok" \
    --kill-primary-after 3 --verify
colo_case kill-secondary "primary went on unprotected.*writers running, memory intact: ok" \
    --kill-secondary-after 2 --verify
ms=$(sed -n 's/.*went on unprotected in \([0-9]*\) ms.*/\1/p' "$E2E_TMP/kill-secondary.out")
if [ -n "$ms" ] && [ "$ms" -le 1000 ]; then
    pass "kill-secondary/within-heartbeat-timeout ($ms ms)"
else
    fail kill-secondary/within-heartbeat-timeout "noticed after '${ms:-?}' ms (timeout 1000)"
fi

# A secondary that hangs (SIGSTOP): connections stay open, only the
# missing heartbeats tell.
colo_case stop-secondary "primary went on unprotected.*writers running, memory intact: ok" \
    --stop-secondary-after 2
ms=$(sed -n 's/.*went on unprotected in \([0-9]*\) ms.*/\1/p' "$E2E_TMP/stop-secondary.out")
if [ -n "$ms" ] && [ "$ms" -ge 900 ] && [ "$ms" -le 2000 ]; then
    pass "stop-secondary/heartbeat-timeout ($ms ms, timeout 1000)"
else
    fail stop-secondary/heartbeat-timeout "noticed after '${ms:-?}' ms (timeout 1000)"
fi

e2e_finish
