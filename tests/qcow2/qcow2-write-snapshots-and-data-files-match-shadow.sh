#!/bin/sh
# Claim: writing an image with internal snapshots copies every shared
# cluster and shared L2 table before changing it, so each snapshot still
# reads what it held; and images with an external data file (raw or not)
# are written at their guest offsets there, the raw one staying a valid
# raw image.  After seeded workloads qemu-img check finds nothing and
# qemu reads the workload's shadow.  SEED=N replays.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"

for cs in 4k 64k; do
    img="$T/snap-$cs.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=$cs "$img" 16M
    qemu-io -f qcow2 -c "write -P 0x5a 0 2M" -c "write -P 0x11 8M 1M" \
        "$img" >/dev/null
    qemu-img snapshot -c s1 "$img"
    qemu-io -f qcow2 -c "write -P 0x66 1M 2M" "$img" >/dev/null
    qemu-img snapshot -c s2 "$img"
    for sn in s1 s2; do
        qemu-img convert -l $sn -f qcow2 -O raw "$img" "$T/$cs.$sn"
    done
    write_and_judge "snap-$cs" "$img" --hot 4194304
    for sn in s1 s2; do
        qemu-img convert -l $sn -f qcow2 -O raw "$img" "$T/$cs.$sn.after"
        cmp -s "$T/$cs.$sn" "$T/$cs.$sn.after" ||
            fail "snap-$cs: snapshot $sn changed"
    done
done

img="$T/data.qcow2"
qemu-img create -q -f qcow2 -o data_file="$T/data.data" "$img" 16M
qemu-io -f qcow2 -c "write -P 0x5a 0 1M" "$img" >/dev/null
write_and_judge data-file "$img"

img="$T/raw.qcow2"
qemu-img create -q -f qcow2 \
    -o data_file="$T/raw.data",data_file_raw=on "$img" 16M
write_and_judge data-file-raw "$img"
cmp -s "$T/raw.data" "$T/data-file-raw.shadow" ||
    fail "data-file-raw: the data file is not the disk's raw image"
