#!/bin/sh
# A qcow2 image with 512-byte clusters survives every crash state of a
# seeded workload that allocates: each write to a new 32 KiB range needs
# a new L2 table, and the file outgrows its first refcount blocks within
# a few dozen writes.  Every state checks 0 or 3 under qemu-img check,
# opens read-write, holds acknowledged-or-later values, and takes a write
# and flush and checks again (crash-check).  CRASH_SEED=N replays a seed.
set -eu
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
exec sh "$abs_top_srcdir/tests/crash/run-crash.sh" \
    --requests 300 --min-states 1200 \
    --workload-arg --hot=0.3 --workload-arg --big=0.2 \
    qcow2 "$seed" 1500 \
    qemu-img create -q -f qcow2 -o cluster_size=512 IMG 2M
