#!/usr/bin/env bash
# Snapshot files (PROTOCOL.md 5): save and restore, every byte compared.
#   roundtrip/C: the matrix's blocks (a 3-page block, a block whose length
#         is not a multiple of the packet size, an all-zero block...) saved
#         with C channels (1 and 4) and restored with C channels into a
#         directory (cmp every block) and into anonymous memory (digests
#         against xxhsum -H3); the stats count every page once.
#   legacy, direct-io: the same with zero-page-detection legacy, and with
#         O_DIRECT page I/O on both sides.
#   sparse: a 1 GiB image of which 1% of the pages hold data: the snapshot
#         allocates about the data only, restoring into tmpfs allocates about
#         the data only, and restoring into anonymous memory leaves the
#         process resident at about the data only.
#   live: `multifd demo --to file:` saves while writers dirty the memory,
#         restores, and compares every page with the memory at the pause.
#   refusals: compression with file:, direct-io where the file system
#         refuses O_DIRECT (ramfs), a restore URI that is not a file.
# Usage: snapshot.sh PATH-TO-multifd
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init snapshot "${1:-}"

SRC=$E2E_TMP/src
mkdir -p "$SRC"
if ! gen_blocks "$SRC" 4242; then
    fail setup "generating blocks failed"
    e2e_finish
fi
BLOCKS=("$SRC"/*.ram)

# stats_ok TAG JSON-FILE PAGES: the stats saw every page exactly once.
stats_ok() {
    local tag=$1 file=$2 pages=$3 why
    why=$(python3 - "$file" "$pages" <<'PYEOF'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except Exception as e:
    print("no JSON stats: %s" % e); sys.exit()
n = s.get("normal_pages", -1) + s.get("zero_pages", -1)
if n != int(sys.argv[2]):
    print("normal + zero pages = %d, the blocks have %s" % (n, sys.argv[2]))
PYEOF
)
    if [ -z "$why" ]; then pass "$tag"; else fail "$tag" "$why"; fi
}

total_pages() {
    local n=0 f
    for f in "$@"; do n=$((n + $(stat -c %s "$f") / 4096)); done
    echo "$n"
}
PAGES=$(total_pages "${BLOCKS[@]}")

# roundtrip TAG SAVE-FLAGS... -- RESTORE-FLAGS...
roundtrip() {
    local tag=$1
    shift
    local sflags=() rflags=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do sflags+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    rflags=("$@")
    local snap=$E2E_TMP/$tag.snap out=$E2E_TMP/$tag.out
    rm -rf "$out"
    mkdir -p "$out"
    run_fg "$tag.save" "$E2E_PROC_TIMEOUT" "$MULTIFD" save --to "file:$snap" \
        --json "${sflags[@]}" "${BLOCKS[@]}"
    if [ "$FG_RC" != 0 ]; then
        fail "$tag/save" "exit $FG_RC"
        show_file "$E2E_TMP/$tag.save.err"
        return
    fi
    pass "$tag/save"
    stats_ok "$tag/save-stats" "$E2E_TMP/$tag.save.out" "$PAGES"
    check_stderr_clean "$tag/save-stderr" "$E2E_TMP/$tag.save.err"

    run_fg "$tag.rdir" "$E2E_PROC_TIMEOUT" "$MULTIFD" restore \
        --from "file:$snap" --into "$out" --json "${rflags[@]}"
    if [ "$FG_RC" != 0 ]; then
        fail "$tag/restore-dir" "exit $FG_RC"
        show_file "$E2E_TMP/$tag.rdir.err"
    else
        local f bad=
        for f in "${BLOCKS[@]}"; do
            cmp -s "$f" "$out/$(basename "$f")" || bad="$bad $(basename "$f")"
        done
        if [ -z "$bad" ]; then pass "$tag/restore-dir"; else fail "$tag/restore-dir" "differ:$bad"; fi
        stats_ok "$tag/restore-dir-stats" "$E2E_TMP/$tag.rdir.out" "$PAGES"
    fi
    check_stderr_clean "$tag/rdir-stderr" "$E2E_TMP/$tag.rdir.err"

    run_fg "$tag.ranon" "$E2E_PROC_TIMEOUT" "$MULTIFD" restore \
        --from "file:$snap" --into anon: "${rflags[@]}"
    if [ "$FG_RC" != 0 ]; then
        fail "$tag/restore-anon" "exit $FG_RC"
        show_file "$E2E_TMP/$tag.ranon.err"
    else
        local expected=
        for f in "${BLOCKS[@]}"; do
            expected="${expected}digest $(basename "$f") $(xxh3 "$f")"$'\n'
        done
        if [ "$(grep '^digest ' "$E2E_TMP/$tag.ranon.out" | sort)" = "$(printf '%s' "$expected" | sort)" ]; then
            pass "$tag/restore-anon"
        else
            fail "$tag/restore-anon" "digests differ from xxhsum -H3"
            show_file "$E2E_TMP/$tag.ranon.out"
        fi
    fi
    check_stderr_clean "$tag/ranon-stderr" "$E2E_TMP/$tag.ranon.err"
    rm -rf "$out" "$snap"
}

roundtrip ch1 --channels 1 -- --channels 1
roundtrip ch4 --channels 4 -- --channels 4
roundtrip legacy --channels 2 --zero-page-detection legacy -- --channels 3
roundtrip zpd-none --channels 2 --zero-page-detection none -- --channels 2
roundtrip direct --channels 2 --direct-io -- --channels 2 --direct-io

# --- 1 GiB, 1% data: sparse on disk, sparse when restored ------------------
SPARSE=$E2E_TMP/sparse.ram
python3 - "$SPARSE" <<'PYEOF'
import os, sys
size, P = 1 << 30, 4096
with open(sys.argv[1], "wb") as f:
    f.truncate(size)
    # Every 100th page holds data: 2622 pages, 10.2 MiB.
    for i in range(0, size // P, 100):
        f.seek(i * P)
        f.write(os.urandom(P))
PYEOF
DATA=$(( (262144 + 99) / 100 * 4096 ))
run_fg sparse.save "$E2E_PROC_TIMEOUT" "$MULTIFD" save \
    --to "file:$E2E_TMP/sparse.snap" --channels 2 --json "$SPARSE"
if [ "$FG_RC" = 0 ]; then
    alloc=$(alloc_bytes "$E2E_TMP/sparse.snap")
    # The data, plus header, table and bitmap; some file-system slack.
    if [ "$alloc" -le $((DATA + DATA / 10 + (1 << 20))) ]; then
        pass "sparse/file ($alloc bytes allocated for $DATA of data)"
    else
        fail sparse/file "the snapshot allocates $alloc bytes for $DATA bytes of data"
    fi
    stats_ok sparse/save-stats "$E2E_TMP/sparse.save.out" 262144
else
    fail sparse/save "exit $FG_RC"
    show_file "$E2E_TMP/sparse.save.err"
fi

SHM_BASE=${E2E_SHM:-/dev/shm}
if [ "$(stat -f -c %T "$SHM_BASE" 2>/dev/null)" = tmpfs ] && SHM=$(e2e_tmpdir "$SHM_BASE"); then
    e2e_register_dir "$SHM"
    run_fg sparse.rdir "$E2E_PROC_TIMEOUT" "$MULTIFD" restore \
        --from "file:$E2E_TMP/sparse.snap" --into "$SHM" --channels 2
    if [ "$FG_RC" = 0 ] && cmp -s "$SPARSE" "$SHM/sparse.ram"; then
        alloc=$(alloc_bytes "$SHM/sparse.ram")
        if [ "$alloc" -le $((DATA + DATA / 10)) ]; then
            pass "sparse/restore-tmpfs ($alloc bytes allocated)"
        else
            fail sparse/restore-tmpfs "restored file allocates $alloc bytes for $DATA of data"
        fi
    else
        fail sparse/restore-tmpfs "exit $FG_RC or content differs"
        show_file "$E2E_TMP/sparse.rdir.err"
    fi
    rm -f "$SHM/sparse.ram"
else
    skip sparse/restore-tmpfs "$SHM_BASE is not a writable tmpfs"
fi

run_fg sparse.ranon "$E2E_PROC_TIMEOUT" "$MULTIFD" restore \
    --from "file:$E2E_TMP/sparse.snap" --into anon: --channels 2 --json
if [ "$FG_RC" = 0 ]; then
    read -r rss digest < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d["rss_kb"] * 1024, d["digests"]["sparse.ram"])' "$E2E_TMP/sparse.ranon.out")
    if [ "$digest" = "$(xxh3 "$SPARSE")" ]; then
        pass sparse/restore-anon-digest
    else
        fail sparse/restore-anon-digest "digest $digest differs from xxhsum -H3"
    fi
    # The data, the reader buffers and the program itself (ASan's shadow
    # memory included): far below the 1 GiB a populated block would take.
    if [ "$rss" -le $((DATA + (120 << 20))) ]; then
        pass "sparse/restore-anon-rss ($((rss >> 20)) MiB resident)"
    else
        fail sparse/restore-anon-rss "resident $((rss >> 20)) MiB after restoring $((DATA >> 20)) MiB of data"
    fi
else
    fail sparse/restore-anon "exit $FG_RC"
    show_file "$E2E_TMP/sparse.ranon.err"
fi
rm -f "$SPARSE" "$E2E_TMP/sparse.snap"

# --- live save -------------------------------------------------------------
for tracker in uffd-wp manual; do
    run_fg "live-$tracker" 120 "$MULTIFD" demo --size 128M --writers 2 \
        --dirty-rate 64M --dirty-tracker "$tracker" --channels 2 \
        --to "file:$E2E_TMP/live.snap"
    if [ "$FG_RC" = 0 ] && grep -q "every page equals the source's at the pause" "$E2E_TMP/live-$tracker.out"; then
        pass "live/$tracker"
    elif [ "$FG_RC" != 0 ] && grep -q "userfaultfd\|UFFD" "$E2E_TMP/live-$tracker.err" && [ "$tracker" = uffd-wp ]; then
        skip "live/$tracker" "$(head -1 "$E2E_TMP/live-$tracker.err")"
    else
        fail "live/$tracker" "exit $FG_RC"
        show_file "$E2E_TMP/live-$tracker.err"
    fi
    rm -f "$E2E_TMP/live.snap"
done

# --- refusals ----------------------------------------------------------------
# expect_refusal TAG WORDS CMD...: exit 1, one error line containing WORDS.
expect_refusal() {
    local tag=$1 words=$2
    shift 2
    run_fg "$tag" 30 "$@"
    check_refused "$tag" "$FG_RC" "$E2E_TMP/$tag.err" "$words"
}
expect_refusal refuse-compression "multifd-compression" \
    "$MULTIFD" save --to "file:$E2E_TMP/x.snap" --multifd-compression zstd "${BLOCKS[0]}"
expect_refusal refuse-restore-uri "snapshot file" \
    "$MULTIFD" restore --from tcp:127.0.0.1:1 --into anon:
expect_refusal refuse-missing "No such file" \
    "$MULTIFD" restore --from "file:$E2E_TMP/none.snap" --into anon:

RAMFS=$E2E_TMP/ramfs
mkdir -p "$RAMFS"
if mount -t ramfs ramfs "$RAMFS" 2>/dev/null; then
    expect_refusal refuse-direct-io-ramfs "O_DIRECT" \
        "$MULTIFD" save --to "file:$RAMFS/x.snap" --direct-io "${BLOCKS[0]}"
    umount "$RAMFS"
else
    skip refuse-direct-io-ramfs "cannot mount a ramfs here (not root?)"
fi

e2e_finish
