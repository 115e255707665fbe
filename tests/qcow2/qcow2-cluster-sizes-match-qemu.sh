#!/bin/sh
# Claim: for qcow2 v2 (compat=0.10) and v3 images with 512 B, 4 KiB,
# 64 KiB and 2 MiB clusters, holding data, zero clusters (write -z),
# discarded ranges and unaligned writes, diskserve exports exactly what
# qemu reads and reports the block status qemu-nbd reports.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"

for compat in 0.10 1.1; do
    for cs in 512 4096 65536 2097152; do
        img="$T/c$cs-$compat.qcow2"
        qemu-img create -q -f qcow2 -o cluster_size=$cs,compat=$compat \
            "$img" 24M
        qio "$img" \
            "write -s $(stamp 1 0 1M) 0 1M" \
            "write -s $(stamp 2 3000001 70001) 3000001 70001" \
            "write -z 512k 64k" \
            "write -s $(stamp 3 6M 4M) 6M 4M" \
            "write -z 8M 2M" \
            "discard 9M 512k" \
            "write -s $(stamp 4 23M 1M) 23M 1M" \
            "write -s $(stamp 5 12345 2) 12345 2"
        check_export "c$cs-$compat" "$img"
    done
done
