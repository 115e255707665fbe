#!/bin/sh
# Claim: with extended L2 entries, writes allocate and mark only the
# subclusters they touch (copying the rest of a partly written subcluster
# from the backing file or zeros), zero writes set subcluster zero bits,
# and after seeded workloads, with and without a backing file, qemu-img
# check finds nothing and qemu reads the workload's shadow.  A single
# small write into an empty cluster allocates exactly its subclusters.
# SEED=N replays a run.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"

base="$T/base.qcow2"
qemu-img create -q -f qcow2 "$base" 24M
qemu-io -f qcow2 -c "write -P 0x42 0 24M" "$base" >/dev/null

for cs in 64k 32k; do
    img="$T/ext-$cs.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=$cs,extended_l2=on "$img" 32M
    qemu-io -f qcow2 -c "write -P 0x5a 4k 100k" "$img" >/dev/null
    write_and_judge "ext-$cs" "$img"

    img="$T/ext-backed-$cs.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=$cs,extended_l2=on \
        -b "$base" -F qcow2 "$img" 32M
    write_and_judge "ext-backed-$cs" "$img" --align 512
done

# One 1 KiB write into an empty 64 KiB cluster over a backing file:
# subcluster 1 (2 KiB) is allocated, with its other half from the
# backing file; every other subcluster still reads the backing file.
img="$T/one.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=64k,extended_l2=on \
    -b "$base" -F qcow2 "$img" 32M
ds_start one "$img"
qemu-io -f raw -c "write -P 0x77 3k 1k" "$DS_URI" >/dev/null
ds_stop "$DS_PID"
qemu-img check -q "$img" || fail "one: qemu-img check"
qemu-io -f qcow2 -c "read -P 0x42 0 3k" -c "read -P 0x77 3k 1k" \
    -c "read -P 0x42 4k 60k" "$img" >/dev/null || fail "one: contents"
map=$(qemu-img map --output=json -f qcow2 "$img" |
      /usr/bin/python3 -c '
import json, sys
print(" ".join("%d:%d" % (e["start"], e["depth"])
               for e in json.load(sys.stdin) if e["start"] < 65536))')
# depth 0: this image; 1: the backing file.
[ "$map" = "0:1 2048:0 4096:1" ] ||
    fail "one: subclusters allocated: $map"
echo "ok: one subcluster"
