#!/usr/bin/env bash
# Five faults a hostile source could cause a destination (fixed together,
# "Destination: five faults a hostile source could cause"), each played by
# an independent peer in Python (peer_faults.py, which starts `multifd
# recv` itself and judges the outcome; its docstring has the details):
#   uffd-race-8k, uffd-race-64k: every page sent on four channels at once
#         into userfaultfd-placed memory: recv is not killed (it was, by
#         SIGBUS), the migration completes; uffd-race-4k is the control
#         (4 KiB pages never could fault).
#   zstd-window-27: a zstd frame asking for a 2^27-byte window is refused,
#         one error line naming the window; zstd-window-25: 2^25 still
#         decodes, the digest right.
#   colo-complete-before-ckpt0: COMPLETE before COLO checkpoint 0 is
#         refused (it ended the session with the empty replica, exit 0).
#   missing-channel: 1 of 2 data channels connected: `recv
#         --handshake-timeout 1000` fails within 4 s (it waited forever).
#   colo-hb-strays, colo-hb-iteration-end: a primary silent after
#         checkpoint 0, with strays connecting every 300 ms, or at an
#         ITERATION_END whose SYNC never comes: the secondary promotes
#         checkpoint 0 within 2.5 s of heartbeat-timeout 1000 (it waited
#         for idle-timeout, 8 s), the replica's digest checkpoint 0's.
# Usage: peer_faults.sh PATH-TO-multifd
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init peer_faults "${1:-}"

for c in uffd-race-4k uffd-race-8k uffd-race-64k zstd-window-27 zstd-window-25 \
    colo-complete-before-ckpt0 missing-channel colo-hb-strays colo-hb-iteration-end; do
    peer_case "$c" "$here/peer_faults.py" "$MULTIFD"
done
e2e_finish
