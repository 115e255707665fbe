#!/bin/sh
# Claim: images created with every preallocation mode (off, metadata,
# falloc, full) and, with metadata preallocation, every refcount width
# (refcount_bits 1 to 64), read as qemu reads them and report the block
# status qemu-nbd reports: with metadata preallocation, mapped clusters
# never written are zero (not holes), found through the refcounts as
# qemu finds them.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"

for mode in off metadata falloc full; do
    img="$T/pre-$mode.qcow2"
    qemu-img create -q -f qcow2 -o preallocation=$mode "$img" 8M
    qio "$img" "write -s $(stamp 1 1M 64k) 1M 64k" \
        "write -s $(stamp 2 5000000 3000) 5000000 3000"
    check_export "pre-$mode" "$img"
done
for bits in 1 2 4 8 16 32 64; do
    img="$T/rc$bits.qcow2"
    qemu-img create -q -f qcow2 \
        -o preallocation=metadata,refcount_bits=$bits,cluster_size=4096 \
        "$img" 4M
    qio "$img" "write -s $(stamp 3 100k 200k) 100k 200k"
    check_export "rc$bits" "$img"
done
