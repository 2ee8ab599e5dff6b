#!/usr/bin/env bash
# Source-side faults a destination could cause (fixed together: "Source: a
# failure or mfd_cancel releases a thread stuck writing the main channel
# ..."), each played by a fake destination in Python (source_faults.py,
# which starts the source itself - `multifd send`, or the library harness
# built from source_harness.c - and judges the outcome; its docstring has
# the details):
#   cancel-main-stalled: mfd_cancel while the destination reads nothing on
#         the main channel: mfd_migrate returns -MFD_ECANCELED within 4.5 s
#         of the cancel, pauses and resumes balanced (it hung in the write).
#   colo-frozen-secondary-unix, colo-frozen-secondary-tcp: a COLO secondary
#         that ACKs checkpoint 0, then freezes while the primary writes a
#         64 MiB DEVICE_STATE: the primary reports it lost
#         (heartbeat-timeout) within 5 s and goes on unprotected (it hung
#         on unix, and took TCP's network-timeout, ~11 s, on tcp).
#   main-stalled-unix, data-noread-unix: `multifd send --network-timeout
#         2000` to a destination that never reads the main channel, or its
#         data channels, over unix: exit 1 within 7.5 s, one error line
#         naming network-timeout (it hung).
#   colo-no-ack: a COLO secondary that heartbeats but never sends
#         CHECKPOINT_ACK: "no CHECKPOINT_ACK 0 within 3000 ms" (it waited
#         forever).
#   error-text-escapes, colo-error-text-escapes: the destination's ERROR
#         text with an escape sequence, a newline and a NUL reaches
#         `multifd send`'s error line, and a COLO primary's error, log
#         line and unprotected reason, with '?' for each control character.
# Not covered: zero-copy reaping (no deterministic end-to-end symptom).
# Usage: source_faults.sh PATH-TO-multifd PATH-TO-source_harness
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init source_faults "${1:-}"

HARNESS=${2:-}
case $HARNESS in
    '') echo "usage: $0 PATH-TO-multifd PATH-TO-source_harness" >&2
        exit 2 ;;
    /*) ;;
    *) HARNESS=$PWD/$HARNESS ;;
esac
if [ ! -x "$HARNESS" ]; then
    echo "source_faults: $HARNESS is not an executable" >&2
    exit 2
fi

for c in cancel-main-stalled colo-frozen-secondary-unix \
    colo-frozen-secondary-tcp main-stalled-unix data-noread-unix colo-no-ack \
    error-text-escapes colo-error-text-escapes; do
    peer_case "$c" "$here/source_faults.py" "$MULTIFD" "$HARNESS"
done
e2e_finish
