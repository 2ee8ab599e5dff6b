#!/usr/bin/env bash
# A real guest's RAM as a content case for bench-qemu (issue 5): boots
# Debian's kernel (the linux-image package of this Debian release) with a
# small busybox initramfs under QEMU TCG (this machine's KVM is paravirtual
# and a stock kernel barely boots under it), its RAM a memory-backend-file
# (share=on) on OUT. The initramfs's init runs a workload for a while, then
# powers off; OUT keeps the guest's memory as the guest left it: the
# kernel's text and data, page tables, slab, page cache, a tmpfs with a
# copy of the initramfs's kernel modules (ELF code), the kernel's symbol table and log
# (text), a compressed archive and random bytes, and the never-touched rest
# (zero, holes in the file).
#
# The packages are fetched with `apt-get download` and unpacked with
# `dpkg -x` into $CACHE (nothing is installed); the image is cached there
# too, keyed by size, and copied to OUT (sparse).
#
# Usage: realguest.sh OUT SIZE   (SIZE in QEMU's form: 1G, 4G, ...)
# env:   CACHE (default /var/cache/multifd-bench/realguest)
#        QEMU  (default qemu-system-x86_64)
set -eu
OUT=${1:?usage: realguest.sh OUT SIZE}
SIZE=${2:?usage: realguest.sh OUT SIZE}
CACHE=${CACHE:-/var/cache/multifd-bench/realguest}
QEMU=${QEMU:-qemu-system-x86_64}
say() { echo "realguest: $*" >&2; }

mkdir -p "$CACHE"
cd "$CACHE"
IMG=$CACHE/guest-$SIZE.ram
if [ ! -s "$IMG" ]; then
    if [ ! -x x/bin/busybox ] || ! ls x/boot/vmlinuz-* >/dev/null 2>&1; then
        K=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image/{print $2; exit}')
        [ -n "$K" ] || { say "no linux-image package in apt's lists (apt-get update?)"; exit 1; }
        say "fetching $K and busybox-static"
        rm -f ./*.deb
        apt-get download "$K" busybox-static >/dev/null 2>&1 ||
            { say "apt-get download $K busybox-static failed"; exit 1; }
        rm -rf x && mkdir x
        for d in ./*.deb; do dpkg -x "$d" x; done
    fi
    KERNEL=$(ls x/boot/vmlinuz-* | head -1)
    KVER=${KERNEL##*/vmlinuz-}

    # The initramfs: busybox, some compressed kernel modules, and the init.
    R=$(mktemp -d)
    trap 'rm -rf "$R"' EXIT
    mkdir -p "$R/bin" "$R/proc" "$R/sys" "$R/dev" "$R/t" "$R/m"
    cp x/bin/busybox "$R/bin/"
    for a in sh mount mkdir find unxz xz cat cp seq gzip dd sort sleep echo \
        poweroff dmesg awk head wc ls sync basename; do
        ln -s busybox "$R/bin/$a"
    done
    cp -r "x/lib/modules/$KVER/kernel/drivers/net" "x/lib/modules/$KVER/kernel/fs" "$R/m/"
    cat >"$R/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=80% tmpfs /t
echo "realguest: workload start"
# ELF code and data: the kernel modules of the initramfs, copied to a tmpfs
n=0
for f in $(find /m -name '*.ko'); do
    cp "$f" /t/mod$n.ko; n=$((n + 1))
done
# text: the kernel's symbols and log, numbers, sorted
cat /proc/kallsyms /proc/kallsyms >/t/kallsyms
dmesg >/t/dmesg
seq 1 400000 >/t/seq
sort -r /t/seq >/t/seq.sorted
# a compressed archive, and random bytes
gzip -c /t/kallsyms >/t/kallsyms.gz
dd if=/dev/urandom of=/t/random bs=1M count=64 2>/dev/null
# a process heap: awk's arrays
awk 'BEGIN { for (i = 0; i < 300000; i++) a[i] = "key" i " value " i * 7; print length(a) }' >/t/awk
echo "realguest: workload done: $n modules, $(cat /t/awk) awk entries"
sync
poweroff -f
EOF
    chmod +x "$R/init"
    BB=$CACHE/x/bin/busybox
    (cd "$R" && find . | "$BB" cpio -o -H newc 2>/dev/null | gzip -1) >"$CACHE/initramfs.gz"

    say "booting $KVER under TCG with $SIZE of RAM (a minute or two)"
    rm -f "$IMG.tmp"
    timeout 900 "$QEMU" -machine pc,memory-backend=ram -accel tcg -m "$SIZE" \
        -object "memory-backend-file,id=ram,size=$SIZE,mem-path=$IMG.tmp,share=on" \
        -kernel "$KERNEL" -initrd "$CACHE/initramfs.gz" \
        -append "console=ttyS0 quiet panic=-1" -no-reboot \
        -display none -serial "file:$CACHE/console.log" -nodefaults >/dev/null 2>&1 || true
    if ! grep -q "realguest: workload done" "$CACHE/console.log"; then
        say "the guest did not finish its workload; its console:"
        tail -20 "$CACHE/console.log" >&2
        exit 1
    fi
    grep "realguest: workload done" "$CACHE/console.log" | tr -d '\r' >&2
    mv "$IMG.tmp" "$IMG"
fi
cp --sparse=always "$IMG" "$OUT"
