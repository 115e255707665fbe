#!/bin/bash
# Install what diskserve needs to build and test on Debian 12, skipping
# what is already there.  Needs root (or sudo).
set -eu
pkgs=(
    build-essential autoconf automake pkg-config
    libuv1-dev zlib1g-dev libzstd-dev nettle-dev libinih-dev libjson-c-dev
    libisal-dev libgnutls28-dev gnutls-bin strace
    clang-14 libfuzzer-14-dev
    libnbd-dev libnbd-bin python3-libnbd python3-libvhdi
    qemu-utils qemu-system-x86 nbdkit fio nbd-client
    linux-image-amd64 busybox-static e2fsprogs cpio gzip util-linux python3
    librbd-dev ceph-mon ceph-mgr ceph-osd ceph-common qemu-block-extra
)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "installing: ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
