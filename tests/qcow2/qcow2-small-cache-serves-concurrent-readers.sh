#!/bin/sh
# Claim: with an L2 cache far smaller than the image's L2 tables, many
# threads and many clients reading at once (so tables are evicted and
# reloaded under them) still read exactly what qemu reads; the driver's
# own checker hammers the cache from 8 threads with 16 slots, then
# diskserve --cache-size 4k serves 4 concurrent clients.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"
require nbdcopy

# 512-byte clusters: an L2 table maps 32 KiB, so 16 MiB needs 512 tables.
img="$T/small.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512 "$img" 16M
qio "$img" "write -s $(stamp 1 0 6M) 0 6M" \
    "write -s $(stamp 2 8M 4M) 8M 4M" "write -z 9M 1M" \
    "write -s $(stamp 3 15M 1M) 15M 1M"
qemu-img convert -f qcow2 -O raw "$img" "$T/small.raw"
"$READ_CHECK" -S "$SEED" -c 1 -t 8 -n 3000 "$img" "$T/small.raw" ||
    fail "driver check with a 16-slot cache"

# 4 KiB clusters over a 3-level chain, each level with a tiny cache.
qemu-img create -q -f qcow2 -o cluster_size=4096 "$T/b2.qcow2" 64M
qio "$T/b2.qcow2" "write -s $(stamp 4 0 16M) 0 16M"
qemu-img create -q -f qcow2 -o cluster_size=4096 -b "$T/b2.qcow2" \
    -F qcow2 "$T/b1.qcow2"
qio "$T/b1.qcow2" "write -s $(stamp 5 4M 8M) 4M 8M" \
    "write -s $(stamp 6 40M 8M) 40M 8M"
qemu-img create -q -f qcow2 -o cluster_size=4096 -b "$T/b1.qcow2" \
    -F qcow2 "$T/b0.qcow2"
qio "$T/b0.qcow2" "write -s $(stamp 7 10M 12M) 10M 12M" "write -z 44M 1M"
qemu-img convert -f qcow2 -O raw "$T/b0.qcow2" "$T/b0.raw"
"$READ_CHECK" -S "$SEED" -c 1 -t 8 -n 3000 "$T/b0.qcow2" "$T/b0.raw" ||
    fail "driver check of a chain with 16-slot caches"

ds_start tiny -r --cache-size 4k --threads 4 "$T/b0.qcow2"
pids=""
for i in 1 2 3 4; do
    nbdcopy --connections=2 --requests=16 "$DS_URI" "$T/copy$i.raw" &
    pids="$pids $!"
done
for p in $pids; do
    wait "$p" || fail "nbdcopy failed"
done
for i in 1 2 3 4; do
    cmp "$T/b0.raw" "$T/copy$i.raw" || fail "client $i read wrong data"
done
ds_stop "$DS_PID" || fail "server exit status"
echo "ok: 4 clients x 2 connections through a 16-slot cache"
