#!/bin/sh
# Installs the Debian packages multifd needs to build and test, only those
# missing, so `make` works on a fresh machine and costs nothing on a ready one.
set -e
PKGS="gcc make cmake ninja-build pkg-config libxxhash-dev xxhash libcmocka-dev
      zlib1g-dev libzstd-dev liblz4-dev libisal-dev python3 iproute2 procps
      clang libclang-rt-14-dev libgnutls28-dev gnutls-bin"
# Intel's multi-buffer crypto (AES-GCM for TLS data channels): amd64 only.
[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] && PKGS="$PKGS libipsec-mb-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
