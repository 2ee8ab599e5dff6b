#!/usr/bin/env bash
# TLS on every channel (PROTOCOL.md 6), with certificates and keys made here
# by certtool (gnutls-bin). Every migration that must succeed is verified
# (the destination's XXH3-64 digest of the block against xxhsum -H3); every
# one that must fail exits 1 with one error line naming the cause, and the
# destination never completes a session with a peer it refused.
#   x509: default host (the URI's 127.0.0.1), an overridden host
#         (--tls-hostname localhost), a mismatched host, an anonymous client
#         allowed (--tls-verify-peer off) and refused (default), a client DN
#         inside and outside --tls-authz, an expired server certificate,
#         an unknown CA; 4 channels, zstd compression over TLS.
#   psk:  matching keys, mismatching keys.
#   mixing: a plaintext source against a TLS destination and the reverse;
#         zero-copy-send with TLS refused.
#   demo (x509) and bench (PSK) over TLS, verified.
#   reframed: through tls_reframe.py, a proxy that re-cuts the stream into
#         TLS records of random sizes, into fresh, preallocated memory,
#         with zstd and with CRC.
# Usage: tls.sh PATH-TO-multifd
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
e2e_init tls "${1:-}"

if ! command -v certtool >/dev/null; then
    skip tls "certtool (gnutls-bin) is not installed"
    e2e_finish
fi

P=$E2E_TMP/pki
mkdir -p "$P/srv" "$P/cli" "$P/anon" "$P/old" "$P/other" "$P/cli2"
gen() { certtool "$@" >/dev/null 2>&1; }
tmpl() { printf '%s\n' "$@" >"$P/t.tmpl"; }
# ca_make DIR: a CA in DIR (ca-key.pem, ca-cert.pem).
ca_make() {
    gen --generate-privkey --outfile "$1/ca-key.pem"
    tmpl 'cn = "multifd test CA"' ca cert_signing_key 'expiration_days = 30'
    gen --generate-self-signed --load-privkey "$1/ca-key.pem" \
        --template "$P/t.tmpl" --outfile "$1/ca-cert.pem"
}
# leaf CADIR OUTDIR ROLE TEMPLATE-LINES...: ROLE-key.pem / ROLE-cert.pem.
leaf() {
    local ca=$1 out=$2 role=$3
    shift 3
    gen --generate-privkey --outfile "$out/$role-key.pem"
    tmpl "$@" encryption_key signing_key
    gen --generate-certificate --load-privkey "$out/$role-key.pem" \
        --load-ca-certificate "$ca/ca-cert.pem" --load-ca-privkey "$ca/ca-key.pem" \
        --template "$P/t.tmpl" --outfile "$out/$role-cert.pem"
    cp "$ca/ca-cert.pem" "$out/"
}
mkdir -p "$P/ca" "$P/ca2"
ca_make "$P/ca"
ca_make "$P/ca2"
leaf "$P/ca" "$P/srv" server 'cn = "localhost"' 'dns_name = "localhost"' \
    'ip_address = "127.0.0.1"' tls_www_server 'expiration_days = 30'
leaf "$P/ca" "$P/cli" client 'cn = "source1"' 'organization = "Example"' \
    tls_www_client 'expiration_days = 30'
cp "$P/ca/ca-cert.pem" "$P/anon/"
leaf "$P/ca" "$P/old" server 'cn = "localhost"' 'ip_address = "127.0.0.1"' \
    tls_www_server 'activation_date = "2020-01-01 00:00:00 UTC"' \
    'expiration_date = "2020-02-01 00:00:00 UTC"'
leaf "$P/ca2" "$P/other" client 'cn = "source1"' 'organization = "Example"' \
    tls_www_client 'expiration_days = 30'
cp "$P/ca/ca-cert.pem" "$P/other/"   # trusts our server; signed by ca2
if [ ! -s "$P/srv/server-cert.pem" ] || [ ! -s "$P/old/server-cert.pem" ]; then
    fail setup "certtool could not make the test certificates"
    e2e_finish
fi
printf 'src1:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$P/keys.psk"
printf 'src1:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$P/wrong.psk"

BLK=$E2E_TMP/blk.ram
python3 -c '
import os, sys
with open(sys.argv[1], "wb") as f:
    for i in range(2048):
        f.write(os.urandom(4096) if i % 3 else bytes(4096))' "$BLK"
WANT=$(xxh3 "$BLK")

# ok TAG "RECV-ARGS" SEND-ARGS...: a verified migration. OK_LISTEN and
# OK_IN_NS (a wrapper running multifd in a network namespace) put the
# destination elsewhere.
ok() {
    local tag=$1 rargs=$2 bin=$MULTIFD
    shift 2
    MULTIFD=${OK_IN_NS:-$MULTIFD}
    # shellcheck disable=SC2086
    start_recv "$tag.recv" --listen "${OK_LISTEN:-tcp:127.0.0.1:0}" \
        --into anon: $rargs
    local started=$?
    MULTIFD=$bin
    if [ "$started" != 0 ]; then
        fail "$tag/start" "$RECV_WHY"
        return
    fi
    [ -n "${OK_STRANGERS:-}" ] && silent_peers "$RECV_URI" "$OK_STRANGERS" 40
    local to=$RECV_URI proxy=
    if [ -n "${OK_REFRAME:-}" ]; then
        # Through a proxy that re-cuts the stream into records of random
        # sizes (seed OK_REFRAME), as an independent peer's may be.
        local pf=$E2E_TMP/$tag.proxy-port i
        python3 "$here/tls_reframe.py" "$P/srv" "$P/cli" "${RECV_URI#tcp:}" \
            "$pf" "$OK_REFRAME" >"$E2E_TMP/$tag.proxy.out" 2>"$E2E_TMP/$tag.proxy.err" &
        proxy=$!
        for i in $(seq 1 250); do [ -s "$pf" ] && break; sleep 0.02; done
        to=tcp:127.0.0.1:$(cat "$pf" 2>/dev/null)
    fi
    run_fg "$tag.send" 60 "$MULTIFD" send --to "$to" --channels 2 "$@" "$BLK"
    local src=$FG_RC
    [ -n "${OK_STRANGERS:-}" ] && kill "$SILENT_PID" 2>/dev/null
    bg_wait "$RECV_PID" 20
    local got
    got=$(sed -n 's/^digest blk.ram //p' "$E2E_TMP/$tag.recv.out")
    if [ "$src" = 0 ] && [ "$BG_RC" = 0 ] && [ "$got" = "$WANT" ]; then
        pass "$tag"
    else
        fail "$tag" "send $src, recv $BG_RC, digest '$got' (want $WANT)"
        show_file "$E2E_TMP/$tag.send.err"
        show_file "$E2E_TMP/$tag.recv.err"
        [ -n "$proxy" ] && show_file "$E2E_TMP/$tag.proxy.err"
    fi
    if [ -n "$proxy" ]; then
        kill "$proxy" 2>/dev/null
        wait "$proxy" 2>/dev/null
    fi
    check_stderr_clean "$tag/stderr" "$E2E_TMP/$tag.send.err"
}

# refused TAG WORDS "RECV-ARGS" SEND-ARGS...: the source fails with WORDS;
# the destination, which saw only strangers, is still waiting: stopped here.
refused() {
    local tag=$1 words=$2 rargs=$3
    shift 3
    # shellcheck disable=SC2086
    if ! start_recv "$tag.recv" --listen tcp:127.0.0.1:0 --into anon: \
        --handshake-timeout 3000 $rargs; then
        fail "$tag/start" "$RECV_WHY"
        return
    fi
    run_fg "$tag.send" 60 "$MULTIFD" send --to "$RECV_URI" --channels 2 \
        --handshake-timeout 3000 "$@" "$BLK"
    check_refused "$tag" "$FG_RC" "$E2E_TMP/$tag.send.err" "$words"
    kill "$RECV_CHILD" 2>/dev/null
    bg_wait "$RECV_PID" 10
    if grep -q "completed" "$E2E_TMP/$tag.recv.out"; then
        fail "$tag/destination" "the destination completed a refused session"
    fi
}

ok x509 "--tls-creds $P/srv" --tls-creds "$P/cli"
ok x509-hostname "--tls-creds $P/srv" --tls-creds "$P/cli" --tls-hostname localhost
ok x509-4ch-zstd "--tls-creds $P/srv" --tls-creds "$P/cli" --channels 4 \
    --multifd-compression zstd
refused x509-wrong-host "does not match" "--tls-creds $P/srv" \
    --tls-creds "$P/cli" --tls-hostname other.example
# More channels than the destination vets at once (16): the source connects
# them side by side; none may be evicted as a stranger (TLS, and plaintext,
# whose init messages come faster than the vetting threads read them).
ok x509-40ch "--tls-creds $P/srv" --tls-creds "$P/cli" --channels 40
ok plaintext-64ch "" --channels 64

# Between two network namespaces: a veth pair's 1500-byte segments, not
# loopback's 64 KiB, under the destination's waits for whole payloads and
# our own records on both sides.
if ! command -v ip >/dev/null || ! e2e_netns_up 233 "$MULTIFD"; then
    e2e_netns_down
    skip x509-veth "cannot create a network namespace and veth pair here"
else
    OK_IN_NS=$E2E_IN_NS OK_LISTEN=tcp:10.233.0.2:0 ok x509-veth-4ch \
        "--tls-creds $P/srv" --tls-creds "$P/cli" --tls-hostname localhost \
        --channels 4
    OK_IN_NS=$E2E_IN_NS OK_LISTEN=tcp:10.233.0.2:0 ok psk-veth \
        "--tls-psk $P/keys.psk" --tls-psk "$P/keys.psk"
    e2e_netns_down
fi
ok x509-anon-allowed "--tls-creds $P/srv --tls-verify-peer off" --tls-creds "$P/anon"
refused x509-anon-refused "refused this source's certificate" "--tls-creds $P/srv" --tls-creds "$P/anon"
if grep -q "no certificate\|certificate" "$E2E_TMP/x509-anon-refused.recv.err"; then
    pass x509-anon-refused/destination-says-why
else
    fail x509-anon-refused/destination-says-why "no log line about the missing certificate"
    show_file "$E2E_TMP/x509-anon-refused.recv.err"
fi
ok x509-authz "--tls-creds $P/srv --tls-authz CN=source1,O=Example" --tls-creds "$P/cli"
refused x509-authz-outside "closed\|TLS" "--tls-creds $P/srv --tls-authz CN=someone-else" \
    --tls-creds "$P/cli"
if grep -q "not in the tls-authz list" "$E2E_TMP/x509-authz-outside.recv.err"; then
    pass x509-authz-outside/destination-says-why
else
    fail x509-authz-outside/destination-says-why "no tls-authz line"
    show_file "$E2E_TMP/x509-authz-outside.recv.err"
fi
refused x509-expired "expired" "--tls-creds $P/old" --tls-creds "$P/cli"
refused x509-unknown-ca "refused this source's certificate" "--tls-creds $P/srv" --tls-creds "$P/other"

ok psk "--tls-psk $P/keys.psk" --tls-psk "$P/keys.psk"
# Strangers that connect and never start a handshake are vetted each on a
# thread of their own: the source behind them, which waits at most 5 s for
# its own handshakes, is not held by the destination's 30 s.
OK_STRANGERS=4 ok x509-behind-silent-strangers \
    "--tls-creds $P/srv --handshake-timeout 30000" --tls-creds "$P/cli" \
    --handshake-timeout 5000
# Records of any size, cut anywhere in headers and pages, into fresh and
# preallocated memory, through a compressor's buffer, and with CRC; the
# main channel's records arrive several to a TLS record (the destination
# used to wait on poll() for records GnuTLS already held, until the idle
# timeout).
OK_REFRAME=1 ok x509-reframed "--tls-creds $P/srv" --tls-creds "$P/cli"
OK_REFRAME=2 ok x509-reframed-prealloc \
    "--tls-creds $P/srv --prealloc --block blk.ram=$(stat -c %s "$BLK")" \
    --tls-creds "$P/cli"
OK_REFRAME=3 ok x509-reframed-zstd "--tls-creds $P/srv" --tls-creds "$P/cli" \
    --multifd-compression zstd
OK_REFRAME=4 ok x509-reframed-crc "--tls-creds $P/srv" --tls-creds "$P/cli" --crc
refused psk-mismatch "TLS" "--tls-psk $P/keys.psk" --tls-psk "$P/wrong.psk"

refused plain-to-tls "preamble" "--tls-creds $P/srv"
refused tls-to-plain "TLS" "" --tls-creds "$P/cli"
# demo and bench open channels too: one x509 directory for both ends.
mkdir -p "$P/both"
cp "$P/srv/"* "$P/cli/"* "$P/both/" 2>/dev/null
run_fg demo-tls 120 "$MULTIFD" demo --size 64M --writers 1 --dirty-rate 16M \
    --channels 2 --tls-creds "$P/both"
if [ "$FG_RC" = 0 ] && grep -q "multifd demo: verified" "$E2E_TMP/demo-tls.out"; then
    pass demo-tls
else
    fail demo-tls "exit $FG_RC"
    show_file "$E2E_TMP/demo-tls.err"
fi
run_fg bench-tls 120 "$MULTIFD" bench --size 64M --content random --runs 1 \
    --no-refs --tls-psk "$P/keys.psk"
if [ "$FG_RC" = 0 ] && grep -q "verified" "$E2E_TMP/bench-tls.out"; then
    pass bench-tls-psk
else
    fail bench-tls-psk "exit $FG_RC"
    show_file "$E2E_TMP/bench-tls.err"
fi

# A source stopped and continued while its channels block in send (Ctrl-Z,
# a debugger, the cgroup freezer): the signal cuts a send short, which
# GnuTLS reports as AGAIN; that is not a timeout (it used to fail the
# migration with "stopped reading or acknowledging").
BIG=$E2E_TMP/big.ram
yes 0123456789abcdef | head -c 512M >"$BIG"
BIG_WANT=$(xxh3 "$BIG")
if start_recv stop-cont.recv --listen tcp:127.0.0.1:0 --into anon: --tls-psk "$P/keys.psk"; then
    "$MULTIFD" send --to "$RECV_URI" --channels 1 --tls-psk "$P/keys.psk" "$BIG" \
        >"$E2E_TMP/stop-cont.send.out" 2>"$E2E_TMP/stop-cont.send.err" &
    spid=$!
    sleep 0.3
    for _ in $(seq 1 10); do
        kill -STOP "$spid" 2>/dev/null; sleep 0.05
        kill -CONT "$spid" 2>/dev/null; sleep 0.05
    done
    bg_wait "$spid" 60
    src=$BG_RC
    bg_wait "$RECV_PID" 20
    got=$(sed -n 's/^digest big.ram //p' "$E2E_TMP/stop-cont.recv.out")
    if [ "$src" = 0 ] && [ "$BG_RC" = 0 ] && [ "$got" = "$BIG_WANT" ]; then
        pass tls-source-stopped-and-continued
    else
        fail tls-source-stopped-and-continued "send $src, recv $BG_RC, digest '$got' (want $BIG_WANT)"
        show_file "$E2E_TMP/stop-cont.send.err"
    fi
else
    fail tls-source-stopped-and-continued/start "$RECV_WHY"
fi
rm -f "$BIG"

# COLO over TLS: one directory with both roles' certificates, as a host
# that is primary and secondary in turn would have.
mkdir -p "$P/both"
cp "$P/srv/"* "$P/cli/"* "$P/both/"
run_fg colo-tls 120 "$MULTIFD" colo --size 32M --checkpoints 4 --verify \
    --kill-primary-after 3 --tls-creds "$P/both"
if [ "$FG_RC" = 0 ] && grep -q "TLS x509" "$E2E_TMP/colo-tls.out" &&
    grep -q "failover: primary killed, secondary promoted checkpoint 3 .*: ok" "$E2E_TMP/colo-tls.out"; then
    pass colo-tls-failover-verified
else
    fail colo-tls-failover-verified "exit $FG_RC"
    show_file "$E2E_TMP/colo-tls.out"
    show_file "$E2E_TMP/colo-tls.err"
fi
run_fg colo-tls-host 60 "$MULTIFD" colo --size 32M --checkpoints 2 \
    --tls-creds "$P/both" --tls-hostname elsewhere.example
check_refused colo-tls-hostname-mismatch "$FG_RC" "$E2E_TMP/colo-tls-host.err" "does not match"

# tls-priority (QEMU's tls-creds priority): AES-256-GCM and ChaCha20 through
# real handshakes (our records on both; AES-GCM is ipsec-mb's, ChaCha20
# GnuTLS's), TLS 1.2 (GnuTLS's records), and a string that lets through what
# PROTOCOL.md 6 refuses, or that GnuTLS cannot parse.
A256=NORMAL:-CIPHER-ALL:+AES-256-GCM
ok x509-aes256 "--tls-creds $P/srv --tls-priority $A256" --tls-creds "$P/cli" \
    --tls-priority "$A256"
CHA=NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305
ok psk-chacha20 "--tls-psk $P/keys.psk --tls-priority $CHA" \
    --tls-psk "$P/keys.psk" --tls-priority "$CHA"
T12=NORMAL:-VERS-ALL:+VERS-TLS1.2
ok x509-tls12 "--tls-creds $P/srv --tls-priority $T12" --tls-creds "$P/cli" \
    --tls-priority "$T12"
CBC=NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-CBC
refused x509-cbc "multifd takes TLS 1.3" "--tls-creds $P/srv --tls-priority $CBC" \
    --tls-creds "$P/cli" --tls-priority "$CBC"
# PSK adds only the key exchanges the string does not name: a destination
# that takes ECDHE-PSK alone and a source that offers plain PSK alone
# have none in common.
refused psk-kx-excluded "TLS" \
    "--tls-psk $P/keys.psk --tls-priority NORMAL:-PSK:-DHE-PSK" \
    --tls-psk "$P/keys.psk" --tls-priority NORMAL:-ECDHE-PSK:-DHE-PSK
# An option's bad value: the usage exit, before anything connects.
prio_refused() { # TAG WORDS PRIORITY
    run_fg "$1" 30 "$MULTIFD" send --to tcp:127.0.0.1:1 --tls-creds "$P/cli" \
        --tls-priority "$3" "$BLK"
    if [ "$FG_RC" = 2 ] && grep -q "$2" "$E2E_TMP/$1.err"; then
        pass "$1"
    else
        fail "$1" "exit $FG_RC (want 2) and '$2'"
        show_file "$E2E_TMP/$1.err"
    fi
}
prio_refused tls-priority-unparsable \
    "tls-priority: 'NORMAL:+NO-SUCH-THING': GnuTLS stops at '+NO-SUCH-THING'" \
    NORMAL:+NO-SUCH-THING
prio_refused tls-priority-weakening \
    "'%VERIFY_ALLOW_BROKEN' weakens how peers are authenticated" \
    NORMAL:%VERIFY_ALLOW_BROKEN
prio_refused tls-priority-empty "tls-priority: empty" ""
run_fg prio-plain 30 "$MULTIFD" recv --listen tcp:127.0.0.1:0 --into anon: \
    --tls-priority NORMAL
check_refused tls-priority-without-tls "$FG_RC" "$E2E_TMP/prio-plain.err" \
    "tls-priority without tls-creds or tls-psk"

run_fg zerocopy 30 "$MULTIFD" send --to tcp:127.0.0.1:1 --tls-creds "$P/cli" \
    --zero-copy-send "$BLK"
check_refused zerocopy-refused "$FG_RC" "$E2E_TMP/zerocopy.err" "zero-copy-send cannot be combined with TLS"

e2e_finish
