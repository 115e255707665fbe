#!/bin/sh
# A qcow2 image whose refcount table must grow survives every crash state:
# 512-byte clusters with 64-bit refcounts, so one refcount block covers
# 32 KiB of file and the one-cluster refcount table 2 MiB; the image is
# prepared with 1.9 MiB of data, and the workload's scattered writes push
# the file past 2 MiB, so the table is copied to a bigger one (new table
# written and synced before the header moves to it).  CRASH_SEED=N
# replays a seed.
set -eu
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
exec sh "$abs_top_srcdir/tests/crash/run-crash.sh" \
    --requests 300 --min-states 1000 \
    --prep 'qemu-io -f qcow2 -c "write -P 0x11 0 1900k" "$IMG" >/dev/null' \
    --workload-arg --hot=0 --workload-arg --big=0.4 \
    --workload-arg --big-sectors=64 \
    qcow2 "$seed" 1200 \
    qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 IMG 4M
