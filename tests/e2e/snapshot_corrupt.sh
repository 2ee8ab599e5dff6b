#!/usr/bin/env bash
# Damaged snapshot files (PROTOCOL.md 5) against the real `multifd restore`.
#   good:     a valid snapshot of two mixed zero/random blocks (one of 100
#             pages, not a multiple of 64) saved with 2 channels restores
#             (exit 0) and its printed digests equal `xxhsum -H3` of the
#             inputs (--into anon:); --into DIR gives the same bytes;
#   corrupt:  copies of it, each damaged in one way (the header CRC
#             recomputed wherever the damage is not the CRC itself, so each
#             reaches its own check), are refused: exit 1 (not a crash),
#             exactly one `multifd restore: error:` line on stderr naming
#             the problem, no success line and no digest on stdout;
#   killed:   a save killed with SIGKILL midway (--max-bandwidth makes it
#             last seconds) leaves a file refused for its missing COMPLETE
#             flag. A save that finished before the kill is a FAIL (the
#             timing was off), never a silent pass.
# Usage: snapshot_corrupt.sh PATH-TO-multifd
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init snapshot_corrupt "${1:-}"

if ! command -v xxhsum >/dev/null 2>&1; then
    echo "snapshot_corrupt: needs xxhsum" >&2
    exit 2
fi
T=20 # bound of one multifd process on these small files (seconds)
D=$E2E_TMP
TOOL=$D/snaptool.py

# The snapshot layout, by hand (not the code under test): read fields,
# damage them, recompute the CRC32C (Castagnoli, reflected 0x82F63B78) over
# header bytes 0..4091 followed by the block table.
cat >"$TOOL" <<'PYEOF'
import shutil, struct, sys

HDR, ENTRY, CRC_OFF = 4096, 288, 4092

def _table():
    t = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t

TAB = _table()

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = TAB[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF

def u32(m, o): return struct.unpack_from("<I", m, o)[0]
def u64(m, o): return struct.unpack_from("<Q", m, o)[0]
def p32(m, o, v): struct.pack_into("<I", m, o, v)
def p64(m, o, v): struct.pack_into("<Q", m, o, v)

def count(m):
    return u32(m, 16)

def meta_crc(m):
    n = count(m)
    return crc32c(bytes(m[HDR:HDR + ENTRY * n]), crc32c(bytes(m[:CRC_OFF])))

def fix_crc(m):
    p32(m, CRC_OFF, meta_crc(m))

def entry(m, i):
    return HDR + ENTRY * i

def blocks(m):
    out = []
    for i in range(count(m)):
        e = entry(m, i)
        name = bytes(m[e:e + 256]).split(b"\0", 1)[0].decode()
        out.append((name, u64(m, e + 256), u64(m, e + 264), u64(m, e + 272)))
    return out

def load(path):
    with open(path, "rb") as f:
        return bytearray(f.read())

def save(path, m):
    with open(path, "wb") as f:
        f.write(m)

cmd = sys.argv[1]
if cmd == "selfcheck":
    # The CRC here agrees with the known value and with the file's.
    assert crc32c(b"123456789") == 0xE3069283, "crc32c(123456789)"
    m = load(sys.argv[2])
    want, got = u32(m, CRC_OFF), meta_crc(m)
    if want != got:
        sys.exit("file CRC 0x%08x, computed 0x%08x" % (want, got))
    if bytes(m[:8]) != b"MFDSNAP\0" or u32(m, 8) != 1 or u32(m, 20) != 1:
        sys.exit("unexpected header: %r version %d flags %d"
                 % (bytes(m[:8]), u32(m, 8), u32(m, 20)))
    print(" ".join("%s:len=%d,bitmap=%d,pages=%d" % b for b in blocks(m)))
elif cmd == "field":
    # field FILE WHAT: prints one number of the layout.
    m = load(sys.argv[2])
    what = sys.argv[3]
    bl = {b[0]: b for b in blocks(m)}
    if what.startswith("pages:"):
        print(bl[what[6:]][3])
    elif what.startswith("len:"):
        print(bl[what[4:]][1])
    else:
        raise SystemExit("bad field " + what)
elif cmd == "damage":
    # damage IN OUT CASE
    src, dst, case = sys.argv[2:5]
    shutil.copyfile(src, dst)
    m = load(dst)
    bl = blocks(m)
    idx = {b[0]: i for i, b in enumerate(bl)}
    size = len(m)
    if case == "no-complete":
        p32(m, 20, u32(m, 20) & ~1)
        fix_crc(m)
    elif case == "table-flip":
        # A byte of entry 0's length: only the CRC can notice... and it does.
        m[entry(m, 0) + 258] ^= 0x01
    elif case == "bitmap-past-eof":
        p64(m, entry(m, idx["b"]) + 264, (size + 8192) & ~7)
        fix_crc(m)
    elif case == "pages-overlap":
        p64(m, entry(m, idx["b"]) + 272, bl[idx["a"]][3])
        fix_crc(m)
    elif case == "version9":
        p32(m, 8, 9)
        fix_crc(m)
    elif case == "pagesize1000":
        p32(m, 12, 1000)
        fix_crc(m)
    elif case == "bad-magic":
        m[0:8] = b"QEVM\0\0\0\3"
        fix_crc(m)
    elif case == "bitmap-tail":
        # Block b has 100 pages: bit 63 of its word 1 is page 127. The
        # bitmap is outside the CRC: the header stays valid.
        name, length, bmo, pgo = bl[idx["b"]]
        pages = length // u32(m, 12)
        assert pages % 64, "block b's page count is a multiple of 64"
        words = (pages + 63) // 64
        last = bmo + 8 * (words - 1)
        p64(m, last, u64(m, last) | (1 << 63))
    else:
        raise SystemExit("bad case " + case)
    save(dst, m)
else:
    raise SystemExit("bad command " + cmd)
PYEOF

# The blocks: a = 4 MiB (random, zero, alternating, text-like runs),
# b = 100 pages (400 KiB; random and zero pages, last one non-zero).
mkdir -p "$D/in"
python3 - "$D/in" <<'PYEOF'
import os, random, sys
d = sys.argv[1]
P = 4096
r = random.Random(20240605)
Z = bytes(P)
def rnd():
    return r.randbytes(P)
a = [rnd() for _ in range(256)] + [Z] * 256 + \
    [Z if i % 2 else rnd() for i in range(256)] + \
    [(b"multifd snapshot page %d " % i) * 100 + Z for i in range(256)]
a = [p[:P] for p in a]
b = [Z if i % 3 == 1 else rnd() for i in range(99)] + [rnd()]
for name, pages in (("a", a), ("b", b)):
    with open(os.path.join(d, name), "wb") as f:
        f.write(b"".join(pages))
PYEOF
GOOD=$D/good.snap

# --- the valid snapshot --------------------------------------------------
run_fg save 60 "$MULTIFD" save --to "file:$GOOD" --channels 2 "$D/in/a" "$D/in/b"
if [ "$FG_RC" != 0 ] || [ ! -s "$GOOD" ]; then
    fail good/save "save exited $FG_RC"
    show_file "$D/save.err"
    e2e_finish
fi
pass good/save
check_stderr_clean good/save-stderr "$D/save.err"

if info=$(python3 "$TOOL" selfcheck "$GOOD" 2>"$D/selfcheck.err"); then
    pass good/layout-crc-selfcheck
    echo "# good.snap: $(stat -c %s "$GOOD") bytes; $info"
else
    fail good/layout-crc-selfcheck "$(tail -n 1 "$D/selfcheck.err")"
    e2e_finish
fi

run_fg restore-anon "$T" "$MULTIFD" restore --from "file:$GOOD" --into anon: --channels 2
if [ "$FG_RC" = 0 ]; then
    pass good/restore-anon
    bad=
    for n in a b; do
        want=$(xxh3 "$D/in/$n")
        got=$(awk -v n="$n" '$1 == "digest" && $2 == n {print $3}' "$D/restore-anon.out")
        if [ -z "$want" ] || [ "$want" != "$got" ]; then
            bad="$bad $n: digest '$got', xxhsum '$want';"
        fi
    done
    if [ -z "$bad" ]; then
        pass good/restore-anon-digests
    else
        fail good/restore-anon-digests "$bad"
        show_file "$D/restore-anon.out"
    fi
else
    fail good/restore-anon "restore exited $FG_RC"
    show_file "$D/restore-anon.err"
fi
check_stderr_clean good/restore-anon-stderr "$D/restore-anon.err"

mkdir -p "$D/out"
run_fg restore-dir "$T" "$MULTIFD" restore --from "file:$GOOD" --into "$D/out" --channels 3
if [ "$FG_RC" = 0 ] && cmp -s "$D/in/a" "$D/out/a" && cmp -s "$D/in/b" "$D/out/b"; then
    pass good/restore-dir-cmp
else
    fail good/restore-dir-cmp "restore exited $FG_RC or the restored files differ"
    show_file "$D/restore-dir.err"
fi
rm -rf "$D/out"

# --- damaged copies ------------------------------------------------------

# refused TAG FILE WORD...: restore FILE must fail cleanly, naming WORDs.
refused() {
    local tag=$1 file=$2
    shift 2
    run_fg "$tag" "$T" "$MULTIFD" restore --from "file:$file" --into anon: --channels 2
    local out=$D/$tag.out err=$D/$tag.err ok=1 n line w
    if [ "$FG_RC" = 0 ]; then
        fail "$tag/exit" "restore accepted the damaged file (exit 0)"
        ok=0
    elif [ "$FG_RC" = 124 ] || [ "$FG_RC" = 137 ]; then
        fail "$tag/exit" "restore still running after $T s (exit $FG_RC)"
        ok=0
    elif [ "$FG_RC" -ge 128 ]; then
        fail "$tag/exit" "restore crashed: exit $FG_RC (signal $((FG_RC - 128)))"
        ok=0
    elif [ "$FG_RC" != 1 ]; then
        fail "$tag/exit" "restore exit $FG_RC, expected 1"
        ok=0
    fi
    n=$(grep -c '^multifd restore: error: ' "$err")
    line=$(grep '^multifd restore: error: ' "$err" | head -n 1)
    if [ "$n" != 1 ]; then
        fail "$tag/one-error-line" "$n lines 'multifd restore: error:' on stderr, expected 1"
        ok=0
    else
        for w in "$@"; do
            if ! grep -qiF -- "$w" <<<"$line"; then
                fail "$tag/message" "'$line' does not mention '$w'"
                ok=0
            fi
        done
    fi
    if grep -qE '^(multifd restore: snapshot restored|digest )' "$out"; then
        fail "$tag/stdout" "a success line on stdout: $(grep -E '^(multifd restore: snapshot restored|digest )' "$out" | head -n 1)"
        ok=0
    fi
    check_stderr_clean "$tag/stderr" "$err" || ok=0
    if [ "$ok" = 1 ]; then
        pass "$tag"
        echo "#   $line"
    else
        show_file "$err"
        show_file "$out"
    fi
}

# damaged CASE: a copy of the good snapshot with that damage, in $f.
damaged() {
    f=$D/$1.snap
    if ! python3 "$TOOL" damage "$GOOD" "$f" "$1" 2>"$D/$1.tool.err"; then
        fail "$1/setup" "cannot make the damaged file: $(tail -n 1 "$D/$1.tool.err")"
        return 1
    fi
}

# Truncated in the middle of block a's pages region, and to 100 bytes.
pa=$(python3 "$TOOL" field "$GOOD" pages:a)
la=$(python3 "$TOOL" field "$GOOD" len:a)
cp "$GOOD" "$D/cut-mid.snap"
truncate -s $((pa + la / 2 + 123)) "$D/cut-mid.snap"
refused truncated-mid-pages "$D/cut-mid.snap" "'a'" "pages region" "outside"
head -c 100 "$GOOD" >"$D/cut-100.snap"
refused truncated-100-bytes "$D/cut-100.snap" "truncated" "100 bytes"
# An empty file is just as truncated.
: >"$D/empty.snap"
refused truncated-empty "$D/empty.snap" "truncated"

if damaged no-complete; then
    refused no-complete "$f" "COMPLETE"
fi
if damaged table-flip; then
    refused table-flip-bad-crc "$f" "CRC"
fi
if damaged bitmap-past-eof; then
    refused bitmap-past-eof "$f" "'b'" "bitmap region" "outside"
fi
if damaged pages-overlap; then
    refused pages-overlap "$f" "pages region" "overlaps"
fi
if damaged version9; then
    refused version-9 "$f" "version 9"
fi
if damaged pagesize1000; then
    refused page-size-1000 "$f" "page size 1000"
fi
if damaged bad-magic; then
    refused bad-magic "$f" "magic"
fi
if damaged bitmap-tail; then
    refused bitmap-bits-past-last-page "$f" "'b'" "bitmap" "past"
fi

# --- a save killed midway ------------------------------------------------
# 256 MiB, one non-zero byte per page (every page is written), saved at
# 64 MB/s: about 4 s. Killed after 0.5 s.
python3 - "$D/in/big" <<'PYEOF'
import sys
chunk = (b"\x01" + bytes(4095)) * 256
with open(sys.argv[1], "wb") as f:
    for _ in range(256):
        f.write(chunk)
PYEOF
KILLED=$D/killed.snap
bg_start kill-save "$T" "$MULTIFD" save --to "file:$KILLED" --channels 2 \
    --max-bandwidth 64M "$D/in/big"
spid=$BG_PID schild=$BG_CHILD
if [ -z "$schild" ]; then
    fail killed-save/start "could not learn the save's process id"
else
    sleep 0.5
    kill -KILL "$schild" 2>/dev/null
    bg_wait "$spid" 10
    src=$BG_RC
    if [ "$src" = 0 ]; then
        fail killed-save/timing "the save finished before the kill after 0.5 s (timing off: nothing to test)"
    elif [ "$src" != 137 ]; then
        fail killed-save/timing "the save exited $src before the kill, not by SIGKILL"
        show_file "$D/kill-save.err"
    elif [ ! -s "$KILLED" ] || [ "$(stat -c %s "$KILLED")" -lt 4096 ]; then
        fail killed-save/timing "killed before the snapshot file had its header ($(stat -c %s "$KILLED" 2>/dev/null || echo no) bytes)"
    else
        pass killed-save/killed-midway
        echo "# killed the save (pid $schild) after 0.5 s; $(($(alloc_bytes "$KILLED") / 1048576)) MiB of the file written"
        refused killed-save "$KILLED" "COMPLETE"
    fi
fi
rm -f "$D/in/big" "$KILLED"

e2e_finish
