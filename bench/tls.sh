#!/usr/bin/env bash
# TLS vs plaintext: a SIZE random block (default 1G, on /dev/shm) migrated
# with `multifd send` to `multifd recv --into anon:` over loopback TCP, for
# 1, 2 and 4 channels, plaintext and x509 TLS (certificates made here with
# certtool), interleaved, RUNS runs each (default 3); median GB/s of guest
# memory (GB = 1e9 bytes, the source's total time) and the TLS/plain ratio.
# Every run verified (the destination's digest against xxhsum -H3).
# Usage: bench/tls.sh PATH-TO-multifd   (env: SIZE, RUNS)
set -eu
M=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SIZE=${SIZE:-1G}
RUNS=${RUNS:-3}
T=$(mktemp -d /dev/shm/mfd-tls-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
q() { certtool "$@" >/dev/null 2>&1; }
printf '%s\n' 'cn = "bench CA"' ca cert_signing_key >ca.tmpl
q --generate-privkey --outfile ca-key.pem
q --generate-self-signed --load-privkey ca-key.pem --template ca.tmpl --outfile ca-cert.pem
mkdir srv cli
for r in server client; do
    d=srv; [ $r = client ] && d=cli
    printf '%s\n' 'cn = "localhost"' 'ip_address = "127.0.0.1"' tls_www_server tls_www_client \
        encryption_key signing_key >$r.tmpl
    q --generate-privkey --outfile $d/$r-key.pem
    q --generate-certificate --load-privkey $d/$r-key.pem --load-ca-certificate ca-cert.pem \
        --load-ca-privkey ca-key.pem --template $r.tmpl --outfile $d/$r-cert.pem
    cp ca-cert.pem $d/
done
head -c "$(numfmt --from=iec "$SIZE")" /dev/urandom >blk
WANT=$(xxhsum -H3 blk | sed 's/.* = //')
run() { # CHANNELS MODE -> GB/s
    local ch=$1 mode=$2 r=() s=()
    [ "$mode" = tls ] && r=(--tls-creds srv) && s=(--tls-creds cli)
    rm -f uri
    "$M" recv --listen tcp:127.0.0.1:0 --into anon: --uri-file uri "${r[@]}" >recv.out 2>recv.err &
    local pid=$!
    while [ ! -f uri ]; do sleep 0.05; done
    "$M" send --to "$(cat uri)" --channels "$ch" --json "${s[@]}" blk >send.json
    wait "$pid"
    grep -q "digest blk $WANT" recv.out || { echo "bench/tls.sh: digest mismatch ($mode, $ch)" >&2; exit 1; }
    python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["throughput_gbps"])' send.json
}
med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
echo "# TLS vs plaintext: $SIZE random, loopback TCP, recv into fresh anonymous memory, $RUNS runs"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -r), $(gnutls-cli --version 2>/dev/null | head -1)"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| channels | plaintext GB/s | TLS GB/s | TLS / plaintext |"
echo "| --- | --- | --- | --- |"
for ch in 1 2 4; do
    p=(); t=()
    for _ in $(seq "$RUNS"); do p+=("$(run "$ch" plain)"); t+=("$(run "$ch" tls)"); done
    mp=$(med "${p[@]}"); mt=$(med "${t[@]}")
    echo "| $ch | $mp (${p[*]}) | $mt (${t[*]}) | $(python3 -c "print('%.0f%%' % (100 * $mt / $mp))") |"
done
