#!/usr/bin/env bash
# A 1 GiB all-zero block (sparse, on tmpfs) sent with 2 channels:
#   dir:  recv --into DIR on tmpfs: exits 0, the destination file allocates
#         < 1% of its size, cmp equal, stats count all 262144 pages as zero
#         pages (normal_pages == 0) on both sides;
#   anon: recv --into anon: --json: same stats, and the "digests" entry equals
#         `xxhsum -H3` of the source; without --json recv prints exactly
#         a `digest NAME HEX16` line on stdout (other lines may be there).
#   anon-mixed: a few small blocks with data, to check that the printed
#         digests really cover the received bytes (an all-zero block's digest
#         is also the digest of untouched memory).
#   In every case the source sends the file's holes unread (SEEK_HOLE
#   hints): its untouched_pages count them, and the source file still
#   allocates nothing for them afterwards (reading a hole through the shared
#   mapping would put a page of tmpfs memory there).
#   blockdev: the same file behind a loop device sent as FILE (a block
#         device's size comes from BLKGETSIZE64; it has no holes to hint):
#         cmp equal, every page read (skipped without losetup or loop
#         devices).
#   holes: 64 MiB with data in a few ranges (one ending mid-way into a page
#         run, one at the very end) and holes between: cmp equal,
#         untouched_pages == the hole pages, source allocation unchanged,
#         also with --verify (its digest hashes the holes as zeros).
# Usage: zero_tmpfs.sh PATH-TO-multifd
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init zero_tmpfs "${1:-}"

SHM_BASE=${E2E_SHM:-/dev/shm}
if [ ! -d "$SHM_BASE" ] || [ ! -w "$SHM_BASE" ] ||
    [ "$(stat -f -c %T "$SHM_BASE" 2>/dev/null)" != tmpfs ]; then
    skip zero-tmpfs "$SHM_BASE is not a writable tmpfs"
    e2e_finish
fi
SHM=$(e2e_tmpdir "$SHM_BASE") || {
    fail setup "cannot create a temp dir in $SHM_BASE"
    e2e_finish
}
e2e_register_dir "$SHM"

SIZE=$((1024 * 1024 * 1024))
PAGES=$((SIZE / 4096))
mkdir -p "$SHM/src" "$SHM/dst"
BLOCK=$SHM/src/zero1g.ram
truncate -s "$SIZE" "$BLOCK"
EXP=$E2E_TMP/expect.json
# The file is a hole: no need to read 1 GiB to count its zero pages.
printf '{"blocks": {"zero1g.ram": {"pages": %d, "zero_pages": %d, "bytes": %d}}, "pages": %d, "zero_pages": %d, "bytes": %d}\n' \
    "$PAGES" "$PAGES" "$SIZE" "$PAGES" "$PAGES" "$SIZE" >"$EXP"

# zero_stats TAG: the zero-specific part of the stats check.
zero_stats() {
    local tag=$1
    check_stats "$tag" "$E2E_TMP/$tag.send.out" "$E2E_TMP/$tag.recv.out" "$EXP" multifd 2
    local extra
    extra=$(python3 - "$E2E_TMP/$tag.send.out" "$E2E_TMP/$tag.recv.out" "$PAGES" <<'PYEOF'
import json, sys
for f, who in ((sys.argv[1], "source"), (sys.argv[2], "destination")):
    try:
        s = json.load(open(f))
    except Exception as e:
        continue  # reported by check_stats
    if s.get("normal_pages") != 0:
        print("%s: normal_pages %r != 0" % (who, s.get("normal_pages")))
    if s.get("zero_pages") != int(sys.argv[3]):
        print("%s: zero_pages %r != %s" % (who, s.get("zero_pages"), sys.argv[3]))
PYEOF
)
    if [ -n "$extra" ]; then
        STATS_ERRS=$(printf '%s\n%s' "$extra" "$STATS_ERRS" | sed '/^$/d')
    fi
    report_stats "$tag/stats"
}

# run_pair TAG INTO RECV_FLAGS... -- SEND_FLAGS... : one migration of $BLOCK.
run_pair() {
    local tag=$1 into=$2
    shift 2
    local rflags=() sflags=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        rflags+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    sflags=("$@")
    if ! start_recv "$tag.recv" --listen tcp:127.0.0.1:0 --into "$into" "${rflags[@]}"; then
        fail "$tag/recv-start" "$RECV_WHY"
        show_file "$E2E_TMP/$tag.recv.err"
        return
    fi
    run_fg "$tag.send" "$E2E_PROC_TIMEOUT" "$MULTIFD" send --to "$RECV_URI" \
        --channels 2 "${sflags[@]}"
    local src_rc=$FG_RC
    bg_wait "$RECV_PID" 20
    local dst_rc=$BG_RC
    if [ "$dst_rc" = 0 ] && [ "$src_rc" = 0 ]; then
        pass "$tag/exit"
    else
        fail "$tag/exit" "recv exit $dst_rc, send exit $src_rc (expected 0 and 0)"
        show_file "$E2E_TMP/$tag.recv.err"
        show_file "$E2E_TMP/$tag.send.err"
    fi
    check_stderr_clean "$tag/recv-stderr" "$E2E_TMP/$tag.recv.err"
    check_stderr_clean "$tag/send-stderr" "$E2E_TMP/$tag.send.err"
}

# --- 1 GiB zero block into a tmpfs directory -------------------------------
t0=$(now_ms)
run_pair dir "$SHM/dst" --json -- --json "$BLOCK"
echo "# dir migration took $(($(now_ms) - t0)) ms"
DSTF=$SHM/dst/zero1g.ram
if [ -f "$DSTF" ]; then
    size=$(stat -c %s "$DSTF")
    alloc=$(alloc_bytes "$DSTF")
    if [ "$size" != "$SIZE" ]; then
        fail dir/size "destination size $size, expected $SIZE"
    else
        pass dir/size
    fi
    if [ $((alloc * 100)) -lt "$SIZE" ]; then
        pass "dir/sparse"
    else
        fail dir/sparse "destination allocates $alloc bytes (>= 1% of $SIZE)"
    fi
    if timeout 60 cmp -s "$BLOCK" "$DSTF"; then
        pass dir/cmp
    else
        fail dir/cmp "destination differs from the source"
    fi
else
    fail dir/file "no destination file $DSTF"
fi
zero_stats dir
# untouched_of TAG: the source's untouched_pages in TAG's --json output.
untouched_of() {
    python3 -c '
import json, sys
try:
    print(json.load(open(sys.argv[1]))["untouched_pages"])
except Exception as e:
    print("<%s: %s>" % (type(e).__name__, e))
' "$E2E_TMP/$1.send.out"
}
got=$(untouched_of dir)
if [ "$got" = "$PAGES" ]; then
    pass dir/holes-unread
else
    fail dir/holes-unread "source untouched_pages $got, expected $PAGES (the file is one hole)"
fi
salloc=$(alloc_bytes "$BLOCK")
if [ $((salloc * 100)) -lt "$SIZE" ]; then
    pass dir/source-still-sparse
else
    fail dir/source-still-sparse "the source file allocates $salloc bytes after the send (its holes were read)"
fi
rm -rf "$SHM/dst"

# --- the same into anonymous memory, with --json ---------------------------
want=$(xxh3 "$BLOCK")
t0=$(now_ms)
run_pair anon-json anon: --json -- --json "$BLOCK"
echo "# anon migration took $(($(now_ms) - t0)) ms"
got=$(python3 -c '
import json, sys
try:
    print(json.load(open(sys.argv[1]))["digests"]["zero1g.ram"])
except Exception as e:
    print("<%s: %s>" % (type(e).__name__, e))
' "$E2E_TMP/anon-json.recv.out")
if [ "$got" = "$want" ]; then
    pass anon-json/digest
else
    fail anon-json/digest "recv JSON digests[zero1g.ram] = '$got', xxhsum -H3 = '$want'"
fi
zero_stats anon-json

# --- anon without --json: plain digest lines -------------------------------
run_pair anon-plain anon: -- "$BLOCK"
# Other (human-readable) lines may accompany the digest lines on stdout.
if [ "$(grep '^digest ' "$E2E_TMP/anon-plain.recv.out")" = "digest zero1g.ram $want" ]; then
    pass anon-plain/digest
else
    fail anon-plain/digest "stdout has no single line 'digest zero1g.ram $want'"
    show_file "$E2E_TMP/anon-plain.recv.out"
fi
rm -f "$BLOCK"

# --- a sparse file with data: holes unread, data read ---------------------
HOLES=$SHM/src/holes.ram
truncate -s $((64 << 20)) "$HOLES"
# Data (pages): 0-9, 100-355, 1000 alone, 16380-16383 (the end). The rest
# is holes: 16384 - 10 - 256 - 1 - 4 = 16113 pages.
for r in "0 10" "100 256" "1000 1" "16380 4"; do
    read -r first n <<<"$r"
    head -c $((n * 4096)) /dev/urandom |
        dd of="$HOLES" bs=4096 seek="$first" conv=notrunc status=none
done
HOLE_PAGES=16113
mkdir -p "$SHM/dst"
before=$(alloc_bytes "$HOLES")
# --verify: the digest, too, takes the holes as zeros without reading them.
run_pair holes "$SHM/dst" --json -- --json --verify "$HOLES"
if timeout 60 cmp -s "$HOLES" "$SHM/dst/holes.ram"; then
    pass holes/cmp
else
    fail holes/cmp "destination differs from the source"
fi
got=$(untouched_of holes)
if [ "$got" = "$HOLE_PAGES" ]; then
    pass holes/unread
else
    fail holes/unread "source untouched_pages $got, expected $HOLE_PAGES"
fi
after=$(alloc_bytes "$HOLES")
if [ "$after" = "$before" ]; then
    pass holes/source-unchanged
else
    fail holes/source-unchanged "the source file allocated $before bytes before the send, $after after"
fi
rm -rf "$SHM/dst"

# --- the same file as a block device ---------------------------------------
if LOOP=$(losetup -f --show "$HOLES" 2>"$E2E_TMP/losetup.err"); then
    mkdir -p "$SHM/dst"
    run_pair blockdev "$SHM/dst" --json -- --json "$LOOP"
    if timeout 60 cmp -s "$HOLES" "$SHM/dst/$(basename "$LOOP")"; then
        pass blockdev/cmp
    else
        fail blockdev/cmp "destination differs from $LOOP"
    fi
    got=$(untouched_of blockdev)
    if [ "$got" = 0 ]; then
        pass blockdev/all-read
    else
        fail blockdev/all-read "untouched_pages $got on a block device (no holes to know of)"
    fi
    losetup -d "$LOOP"
    rm -rf "$SHM/dst"
else
    skip blockdev "no loop device: $(head -c 200 "$E2E_TMP/losetup.err")"
fi
rm -f "$HOLES"

# --- anon with data: digests must match each block's content ---------------
mkdir -p "$SHM/mixed"
if gen_blocks "$SHM/mixed" 777; then
    MIXED=("$SHM/mixed/tiny.ram" "$SHM/mixed/odd.ram" "$SHM/mixed/big.ram" "$SHM/mixed/zero.ram")
    run_pair anon-mixed anon: -- --zero-page-detection multifd "${MIXED[@]}"
    expected=
    for f in "${MIXED[@]}"; do
        expected="${expected}digest $(basename "$f") $(xxh3 "$f")"$'\n'
    done
    # Order of the lines is not part of the contract: compare sorted.
    if [ "$(grep '^digest ' "$E2E_TMP/anon-mixed.recv.out" | sort)" = "$(printf '%s' "$expected" | sort)" ]; then
        pass anon-mixed/digests
    else
        fail anon-mixed/digests "digest lines differ from xxhsum -H3 of the blocks"
        echo "    expected:"
        printf '%s' "$expected" | sed 's/^/    | /'
        show_file "$E2E_TMP/anon-mixed.recv.out"
    fi
else
    fail anon-mixed/setup "generating blocks failed"
fi

e2e_finish
