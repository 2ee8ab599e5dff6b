#!/usr/bin/env bash
# Side-by-side benchmark: multifd vs QEMU's multifd migration (issue 5).
#
# Peers: Debian's QEMU 7.2 (/usr/bin/qemu-system-x86_64, installed with
# apt-get if missing) and QEMU 10.0.2 from bookworm-backports, unpacked with
# `dpkg -x` into $QEMU10_DIR so the installed QEMU stays as is. A peer that
# cannot be set up is reported in the output and skipped.
#
# Writes docs/benchmarks/qemu.md (Markdown table) and docs/benchmarks/qemu.png
# (gnuplot). Exits non-zero if any migration failed or differed; asserts
# nothing about speed.
#
# Usage: bash bench/qemu/bench-qemu.sh PATH-TO-multifd
# Contents: zero, random, half, text, and guest: a real guest's RAM
# (bench/qemu/realguest.sh boots Debian's kernel under TCG to make it).
# env:   QUICK=1        1 GiB subset: zero/random/text/guest x none/zstd x 2 channels
#        SIZE RUNS CONTENTS METHODS CHANNELS DESTS EXTRA_DESTS  override the
#        matrix (EXTRA_DESTS: METHOD:CHANNELS cases that also get the
#        prealloc and tmpfs destinations, or 'all')
#        RESUME=1       keep the cases a stopped run already measured (its
#                       rows are kept in $RESULTS) and run the others;
#                       the table is rewritten after every case either way
#        TLS=1          every migration of both tools over TLS (x509
#                       certificates made here with certtool)
#        NO_SETUP=1     do not run apt-get (use what is there)
#        QEMU10_DIR     where QEMU 10 is unpacked (/var/cache/multifd-bench/qemu-10)
#        OUT_MD OUT_PNG output paths (docs/benchmarks/qemu.{md,png})
set -u
BIN=${1:?usage: bench-qemu.sh PATH-TO-multifd}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
[ -x "$BIN" ] || { echo "bench-qemu: $BIN is not executable (run make)" >&2; exit 2; }

QUICK=${QUICK:-0}
# A matrix given by hand is labelled as such, not as the full or quick one.
CUSTOM=${SIZE:-}${CONTENTS:-}${METHODS:-}${CHANNELS:-}${DESTS:-}
if [ "$QUICK" = 1 ]; then
    SIZE=${SIZE:-1G}; CONTENTS=${CONTENTS:-"zero random text guest"}
    METHODS=${METHODS:-"none zstd"}; CHANNELS=${CHANNELS:-2}
    EXTRA_DESTS=${EXTRA_DESTS:-none:2}; LABEL="QUICK=1"
else
    SIZE=${SIZE:-4G}; CONTENTS=${CONTENTS:-"zero random half text guest"}
    METHODS=${METHODS:-"none zlib zstd"}; CHANNELS=${CHANNELS:-"1 2 4"}
    EXTRA_DESTS=${EXTRA_DESTS:-none:2}; LABEL="full"
fi
RUNS=${RUNS:-3}
[ -n "$CUSTOM" ] && LABEL="$LABEL, matrix by hand"
DESTS=${DESTS:-"anon prealloc tmpfs"}
QEMU10_DIR=${QEMU10_DIR:-/var/cache/multifd-bench/qemu-10}
OUT_MD=${OUT_MD:-$ROOT/docs/benchmarks/qemu.md}
OUT_PNG=${OUT_PNG:-$ROOT/docs/benchmarks/qemu.png}
NO_SETUP=${NO_SETUP:-0}
RESUME=${RESUME:-0}
RESULTS=${RESULTS:-/var/cache/multifd-bench/results-$LABEL-$SIZE.jsonl}
mkdir -p "$(dirname "$RESULTS")"

say() { echo "bench-qemu: $*" >&2; }
apt_updated=0
apt_update() {
    [ "$apt_updated" = 1 ] && return 0
    apt_updated=1
    apt-get update -q >/dev/null 2>&1 || say "apt-get update failed"
}
need_pkg() { # need_pkg COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "$NO_SETUP" = 1 ] && return 1
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1
    command -v "$1" >/dev/null 2>&1
}

need_pkg python3 python3 || { say "python3 missing"; exit 2; }
need_pkg xxhsum xxhash || { say "xxhsum missing (package xxhash)"; exit 2; }
need_pkg gnuplot gnuplot-nox || say "gnuplot missing: no chart will be drawn"

PEERS=()
MISSING=()

# --- QEMU 7.2: Debian's own
if need_pkg qemu-system-x86_64 qemu-system-x86 &&
    v=$(qemu-system-x86_64 --version 2>&1 | head -1); then
    say "peer QEMU 7.2: $v"
    ver=${v#QEMU emulator version }
    PEERS+=(--peer "QEMU ${ver%% *}=$(command -v qemu-system-x86_64)")
else
    say "PEER UNAVAILABLE: Debian QEMU (qemu-system-x86) could not be installed; continuing without it"
    MISSING+=(--missing "QEMU 7.2 (Debian)=qemu-system-x86 could not be installed")
fi

# --- QEMU 10.0.2: bookworm-backports, unpacked privately
setup_qemu10() {
    local q=$QEMU10_DIR/root/usr/bin/qemu-system-x86_64
    if [ -x "$q" ] && "$q" --version >/dev/null 2>&1; then return 0; fi
    [ "$NO_SETUP" = 1 ] && { Q10_WHY="not unpacked in $QEMU10_DIR and NO_SETUP=1"; return 1; }
    local src=/etc/apt/sources.list.d/bookworm-backports.sources uri
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        # the main suite's URI, from deb822 sources or a one-line list
        uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources |
              awk '{print $2}' | grep -v security | head -1)
        [ -n "$uri" ] || uri=$(grep -hs '^deb .* bookworm ' /etc/apt/sources.list \
              /etc/apt/sources.list.d/*.list | awk '{print $2}' | head -1)
        [ -n "$uri" ] || uri=http://deb.debian.org/debian
        cat >"$src" <<EOF
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        say "added $src ($uri bookworm-backports)"
        apt_updated=0
    fi
    apt_update
    rm -rf "$QEMU10_DIR/debs" "$QEMU10_DIR/root"
    mkdir -p "$QEMU10_DIR/debs" "$QEMU10_DIR/root"
    chmod 755 "$QEMU10_DIR/debs"
    if ! (cd "$QEMU10_DIR/debs" && apt-get download -q -t bookworm-backports \
            qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
            qemu-system-data/bookworm-backports seabios/bookworm-backports) \
            >"$QEMU10_DIR/download.log" 2>&1; then
        Q10_WHY="apt-get download from bookworm-backports failed: $(grep -m1 -E '^E:' "$QEMU10_DIR/download.log")"
        return 1
    fi
    local d
    for d in "$QEMU10_DIR"/debs/*.deb; do dpkg -x "$d" "$QEMU10_DIR/root" || {
        Q10_WHY="dpkg -x $d failed"; return 1; }; done
    if ! "$q" --version >/dev/null 2>"$QEMU10_DIR/version.log"; then
        Q10_WHY="the unpacked binary does not run: $(head -1 "$QEMU10_DIR/version.log")"
        return 1
    fi
}
Q10_WHY=""
if setup_qemu10; then
    r=$QEMU10_DIR/root
    v=$("$r/usr/bin/qemu-system-x86_64" --version | head -1)
    say "peer QEMU 10: $v"
    ver=${v#QEMU emulator version }
    PEERS+=(--peer "QEMU ${ver%% *}=$r/usr/bin/qemu-system-x86_64 -L $r/usr/share/qemu -L $r/usr/share/seabios")
else
    say "PEER UNAVAILABLE: QEMU 10.0.2 (bookworm-backports): $Q10_WHY; continuing without it"
    MISSING+=(--missing "QEMU 10.0.2 (bookworm-backports)=$Q10_WHY")
fi

[ -r /dev/kvm ] && [ -w /dev/kvm ] || say "/dev/kvm not usable: QEMU runs with TCG"

TLS_ARGS=()
if [ "${TLS:-0}" = 1 ]; then
    need_pkg certtool gnutls-bin || { say "certtool missing (gnutls-bin)"; exit 2; }
    T=$(mktemp -d /tmp/mfd-bench-tls.XXXXXX)
    trap 'rm -rf "$T"' EXIT
    q() { certtool "$@" >/dev/null 2>&1; }
    printf '%s\n' 'cn = "bench CA"' ca cert_signing_key >"$T/ca.tmpl"
    q --generate-privkey --outfile "$T/ca-key.pem"
    q --generate-self-signed --load-privkey "$T/ca-key.pem" --template "$T/ca.tmpl" \
        --outfile "$T/ca-cert.pem"
    for r in server client; do
        printf '%s\n' 'cn = "localhost"' 'dns_name = "localhost"' \
            'ip_address = "127.0.0.1"' tls_www_server tls_www_client \
            encryption_key signing_key >"$T/$r.tmpl"
        q --generate-privkey --outfile "$T/$r-key.pem"
        q --generate-certificate --load-privkey "$T/$r-key.pem" \
            --load-ca-certificate "$T/ca-cert.pem" --load-ca-privkey "$T/ca-key.pem" \
            --template "$T/$r.tmpl" --outfile "$T/$r-cert.pem"
    done
    rm -f "$T/ca-key.pem"
    [ -s "$T/client-cert.pem" ] || { say "certtool could not make certificates"; exit 2; }
    TLS_ARGS=(--tls "$T")
    RESULTS=${RESULTS%.jsonl}-tls.jsonl
    LABEL="$LABEL, TLS"
fi

say "matrix: $SIZE, contents [$CONTENTS], methods [$METHODS], channels [$CHANNELS], dests [$DESTS] (extra dests for $EXTRA_DESTS), $RUNS runs${TLS_ARGS:+, TLS}"
python3 "$HERE/bench.py" --multifd "$BIN" "${PEERS[@]}" "${MISSING[@]}" \
    --size "$SIZE" --runs "$RUNS" --contents "$CONTENTS" --methods "$METHODS" \
    --channels "$CHANNELS" --dests "$DESTS" --extra-dest-filter "$EXTRA_DESTS" \
    --md "$OUT_MD" --png "$OUT_PNG" --label "$LABEL" --results "$RESULTS" \
    "${TLS_ARGS[@]}" \
    $([ "$RESUME" = 1 ] && echo --resume)
rc=$?
[ -f "$OUT_MD" ] && cat "$OUT_MD"
exit $rc
