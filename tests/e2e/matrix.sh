#!/usr/bin/env bash
# End-to-end matrix: channels {1,2,4,8} x zero-page-detection
# {none,legacy,multifd} x transport {tcp,unix} = 24 migrations, plus a few
# with --verify / --crc. Each migration sends four blocks (see gen_blocks in
# lib.sh: 3 pages, 1000 pages, 8 MiB mixed, 257 zero pages) from real files
# into `recv --into DIR`, and checks:
#   recv exits 0, send exits 0, no sanitizer report;
#   every block file is byte-identical (cmp);
#   both --json stats against what was sent (check_stats in lib.sh):
#   normal+zero == total pages; none: zero_pages == 0; legacy/multifd:
#   zero_pages == the all-zero pages counted in the files; legacy_zero_pages
#   == zero_pages (legacy) or 0; per-channel sums; data_packets, pages and
#   bytes equal on both sides.
# Usage: matrix.sh PATH-TO-multifd
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init matrix "${1:-}"

SRC=$E2E_TMP/src
mkdir -p "$SRC"
if ! gen_blocks "$SRC" 4242; then
    fail setup "generating blocks failed"
    e2e_finish
fi
FILES=("$SRC/tiny.ram" "$SRC/odd.ram" "$SRC/big.ram" "$SRC/zero.ram")
EXP=$E2E_TMP/expect.json
expect_json "$EXP" "${FILES[@]}"
read -r TOTAL ZEROS < <(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); print(e["pages"], e["zero_pages"])' "$EXP")
echo "# blocks: ${#FILES[@]}, $TOTAL pages, $ZEROS all-zero pages"

# migrate TAG CHANNELS MODE TRANSPORT [extra send flags...]
migrate() {
    local tag=$1 nch=$2 mode=$3 tr=$4
    shift 4
    local dst=$E2E_TMP/dst-$tag listen
    mkdir -p "$dst"
    case $tr in
        tcp) listen=tcp:127.0.0.1:0 ;;
        unix) listen=unix:$E2E_TMP/$tag.sock ;;
    esac
    if ! start_recv "$tag.recv" --listen "$listen" --into "$dst" --json; then
        fail "$tag/recv-start" "$RECV_WHY"
        show_file "$E2E_TMP/$tag.recv.err"
        return
    fi
    if [ "$tr" = unix ] && [ "$RECV_URI" != "$listen" ]; then
        fail "$tag/uri-file" "expected '$listen', got '$RECV_URI'"
    fi
    run_fg "$tag.send" "$E2E_PROC_TIMEOUT" "$MULTIFD" send --to "$RECV_URI" \
        --channels "$nch" --zero-page-detection "$mode" --json "$@" "${FILES[@]}"
    local src_rc=$FG_RC
    bg_wait "$RECV_PID" 15
    local dst_rc=$BG_RC

    if [ "$dst_rc" = 0 ]; then
        pass "$tag/recv-exit"
    else
        fail "$tag/recv-exit" "recv exit $dst_rc, expected 0"
        show_file "$E2E_TMP/$tag.recv.err"
    fi
    if [ "$src_rc" = 0 ]; then
        pass "$tag/send-exit"
    else
        fail "$tag/send-exit" "send exit $src_rc, expected 0"
        show_file "$E2E_TMP/$tag.send.err"
    fi
    check_stderr_clean "$tag/recv-stderr" "$E2E_TMP/$tag.recv.err"
    check_stderr_clean "$tag/send-stderr" "$E2E_TMP/$tag.send.err"

    local f bad=
    for f in "${FILES[@]}"; do
        if ! cmp -s "$f" "$dst/$(basename "$f")"; then
            bad="$bad $(basename "$f")"
        fi
    done
    if [ -z "$bad" ]; then
        pass "$tag/cmp"
    else
        fail "$tag/cmp" "blocks differ or missing:$bad"
    fi

    check_stats "$tag" "$E2E_TMP/$tag.send.out" "$E2E_TMP/$tag.recv.out" \
        "$EXP" "$mode" "$nch"
    report_stats "$tag/stats"
    rm -rf "$dst"
}

start=$(now_ms)
for nch in 1 2 4 8; do
    for mode in none legacy multifd; do
        for tr in tcp unix; do
            migrate "c$nch-$mode-$tr" "$nch" "$mode" "$tr"
        done
    done
done
migrate c4-multifd-tcp-verify-crc 4 multifd tcp --verify --crc
migrate c2-legacy-unix-verify 2 legacy unix --verify
migrate c8-none-tcp-crc 8 none tcp --crc
echo "# matrix took $(($(now_ms) - start)) ms"
e2e_finish
