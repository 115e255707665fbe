#!/bin/sh
# Claim: backing chains of depth 3 mixing qcow2 and raw layers, named by
# relative and absolute paths, with and without a backing format, where
# a backing file is shorter than the image above it, read exactly as
# qemu reads them, and base:allocation and qemu:allocation-depth match
# qemu-nbd -A.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"

mkdir "$T/dir"
# Level 3: raw, 6 MiB, with a hole.
truncate -s 6M "$T/dir/base.raw"
qemu-io -f raw -c "write -s $(stamp 1 0 2M) 0 2M" \
    -c "write -s $(stamp 1 4M 1M) 4M 1M" "$T/dir/base.raw" >/dev/null
# Level 2: qcow2 over the raw file by relative name, 8 MiB.
qemu-img create -q -f qcow2 -b base.raw -F raw "$T/dir/mid.qcow2" 8M
qio "$T/dir/mid.qcow2" \
    "write -s $(stamp 2 1M 1M) 1M 1M" \
    "write -z 4352k 64k" \
    "write -s $(stamp 2 7M 512k) 7M 512k"
# Level 1: qcow2 over mid by absolute name, 10 MiB.
qemu-img create -q -f qcow2 -b "$T/dir/mid.qcow2" -F qcow2 "$T/top.qcow2" 10M
qio "$T/top.qcow2" \
    "write -s $(stamp 3 1536k 1M) 1536k 1M" \
    "write -z 5M 64k" \
    "write -s $(stamp 3 9M 100k) 9M 100k"
check_export raw-qcow2-qcow2 "$T/top.qcow2"

# qcow2 at the bottom, raw in the middle is impossible (raw has no
# backing), so the other mix: qcow2 <- qcow2 <- qcow2, no backing
# format recorded (probed), 64 KiB and 4 KiB clusters mixed.
qemu-img create -q -f qcow2 -o cluster_size=4096 "$T/l3.qcow2" 4M
qio "$T/l3.qcow2" "write -s $(stamp 4 0 4M) 0 4M"
qemu-img create -q -f qcow2 -u -b "$T/l3.qcow2" -F qcow2 "$T/l2.qcow2" 4M
qemu-img rebase -q -u -b l3.qcow2 "$T/l2.qcow2" 2>/dev/null ||
    qemu-img rebase -q -u -b l3.qcow2 -F qcow2 "$T/l2.qcow2"
qio "$T/l2.qcow2" "write -s $(stamp 5 1M 1M) 1M 1M" "write -z 3M 4k"
qemu-img create -q -f qcow2 -o cluster_size=4096 -b "$T/l2.qcow2" \
    -F qcow2 "$T/l1.qcow2" 4M
qio "$T/l1.qcow2" "write -s $(stamp 6 1536k 4k) 1536k 4k" \
    "write -s $(stamp 6 3M 2k) 3M 2k"
check_export qcow2-qcow2-qcow2 "$T/l1.qcow2"

# A version 2 image (compat=0.10, no zero clusters) in the middle.
qemu-img create -q -f qcow2 -o compat=0.10 -b "$T/l3.qcow2" -F qcow2 \
    "$T/v2.qcow2" 4M
qio "$T/v2.qcow2" "write -s $(stamp 9 512k 1M) 512k 1M" "write -z 2M 64k"
qemu-img create -q -f qcow2 -b "$T/v2.qcow2" -F qcow2 "$T/over-v2.qcow2"
qio "$T/over-v2.qcow2" "write -s $(stamp 10 1M 8k) 1M 8k"
check_export over-v2 "$T/over-v2.qcow2"

# A qcow2 image over a raw file only, the raw file shorter.
truncate -s 3M "$T/short.raw"
qemu-io -f raw -c "write -s $(stamp 7 0 3M) 0 3M" "$T/short.raw" >/dev/null
qemu-img create -q -f qcow2 -b "$T/short.raw" -F raw "$T/over.qcow2" 5M
qio "$T/over.qcow2" "write -s $(stamp 8 2M 2M) 2M 2M"
check_export over-short-raw "$T/over.qcow2"
