#!/bin/sh
# Claim: zlib and zstd compressed images (qemu-img convert -c, also with
# extended L2 entries, and
# qemu-io write -c next to plain and zero clusters) at 512 B, 4 KiB,
# 64 KiB and 2 MiB clusters read exactly as qemu reads them, with the
# block status qemu-nbd reports.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"

src="$T/src.qcow2"
qemu-img create -q -f qcow2 "$src" 20M
qio "$src" \
    "write -s $(stamp 1 0 3M) 0 3M" \
    "write -P 0x5a 4M 1M" \
    "write -z 5M 1M" \
    "write -s $(stamp 2 7654321 1234567) 7654321 1234567" \
    "write -s $(stamp 3 19M 1M) 19M 1M"

for type in zlib zstd; do
    for cs in 512 4096 65536 2097152; do
        img="$T/$type-$cs.qcow2"
        qemu-img convert -q -c -f qcow2 -O qcow2 \
            -o cluster_size=$cs,compression_type=$type "$src" "$img"
        check_export "$type-$cs" "$img"
    done
    # Compressed clusters in an image with extended L2 entries.
    img="$T/$type-extl2.qcow2"
    qemu-img convert -q -c -f qcow2 -O qcow2 \
        -o extended_l2=on,compression_type=$type "$src" "$img"
    check_export "$type-extl2" "$img"
    # Compressed clusters mixed with plain and zero ones in one image.
    img="$T/$type-mixed.qcow2"
    qemu-img create -q -f qcow2 -o compression_type=$type "$img" 4M
    qio "$img" \
        "write -c -s $(stamp 4 0 64k) 0 64k" \
        "write -c -s $(stamp 5 128k 64k) 128k 64k" \
        "write -s $(stamp 6 192k 64k) 192k 64k" \
        "write -z 256k 64k" \
        "write -c -P 0 320k 64k" \
        "write -c -s $(stamp 7 4032k 64k) 4032k 64k" \
        "write -s $(stamp 8 130000 100) 130000 100"
    check_export "$type-mixed" "$img"
done
