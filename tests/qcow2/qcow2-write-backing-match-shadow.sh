#!/bin/sh
# Claim: over a backing file (qcow2 or raw, shorter or as long as the
# overlay), partial writes copy the rest of their clusters from the
# backing chain, and after seeded workloads qemu-img check finds nothing
# and qemu reads the workload's shadow.  A trimmed or MAY_TRIM-zeroed
# cluster reads zeros, never the backing file's data, and stays
# unallocated-with-zero-flag rather than holding data.  SEED=N replays.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"

base="$T/base.qcow2"
qemu-img create -q -f qcow2 "$base" 16M
qemu-io -f qcow2 -c "write -P 0x42 0 12M" "$base" >/dev/null
raw="$T/base.raw"
qemu-img convert -f qcow2 -O raw "$base" "$raw"

img="$T/over-qcow2.qcow2"
qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$img" 16M
write_and_judge over-qcow2 "$img" --hot 4194304

img="$T/over-longer.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=4k -b "$base" -F qcow2 \
    "$img" 24M
write_and_judge over-longer "$img" --start 10485760

img="$T/over-raw.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=16k -b "$raw" -F raw "$img" 16M
write_and_judge over-raw "$img"

# Version 2 cannot mark a cluster zero: zero writes over the backing
# file write zeros, and trims that would uncover it leave the cluster.
img="$T/over-v2.qcow2"
qemu-img create -q -f qcow2 -o compat=0.10 -b "$base" -F qcow2 "$img" 16M
write_and_judge over-v2 "$img" --mix write:70,zero:20,flush:5

# Trim and zero over backing data read zeros.
img="$T/trim.qcow2"
qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$img" 16M
qemu-io -f qcow2 -c "write -P 0x11 1M 64k" "$img" >/dev/null
ds_start trim "$img"
qemu-io -f raw -c "discard 0 128k" -c "discard 1M 64k" \
    -c "write -z -u 2M 128k" -c "write -z 3M 64k" -c "discard 4M 128k" \
    "$DS_URI" >/dev/null || fail "trim: qemu-io"
# Half a cluster: that half reads zeros, the other half the backing file.
qemu-io -f raw -c "discard 6M 32k" -c "read -P 0 6M 32k" \
    -c "read -P 0x42 6208k 32k" "$DS_URI" >/dev/null ||
    fail "trim: half a cluster"
for r in "0 128k" "1M 64k" "2M 128k" "3M 64k" "4M 128k"; do
    qemu-io -f raw -c "read -P 0 $r" "$DS_URI" >/dev/null ||
        fail "trim: $r does not read zeros over the backing file"
done
ds_stop "$DS_PID"
qemu-img check -q "$img" || fail "trim: qemu-img check"
for r in "0 128k" "1M 64k" "2M 128k" "3M 64k" "4M 128k"; do
    qemu-io -f qcow2 -c "read -P 0 $r" "$img" >/dev/null ||
        fail "trim: qemu reads $r as other than zeros"
done
# Nothing of the whole clusters trimmed stays allocated in the image:
# the one cluster written before is freed.  Only the half-trimmed
# cluster holds data (zeros and the backing file's other half).
alloc=$(qemu-img map --output=json -f qcow2 "$img" | /usr/bin/python3 -c '
import json, sys
print(" ".join("%d+%d" % (e["start"], e["length"])
               for e in json.load(sys.stdin)
               if e["depth"] == 0 and e["data"]))')
[ "$alloc" = "6291456+65536" ] || fail "trim: data left at $alloc"
echo "ok: trims read zeros over the backing file"
