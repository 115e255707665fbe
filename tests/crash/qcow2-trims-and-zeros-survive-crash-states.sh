#!/bin/sh
# A fully allocated qcow2 image with 1 KiB clusters survives every
# crash state of a workload heavy in trims and zero writes (with and
# without NO_HOLE), which free clusters and clear L2 entries: a cleared
# entry must be durable before its cluster's refcount drops, and a freed
# cluster may be reused only after that.  CRASH_SEED=N replays a seed.
set -eu
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
exec sh "$abs_top_srcdir/tests/crash/run-crash.sh" \
    --requests 300 --min-states 1000 \
    --prep 'qemu-io -f qcow2 -c "write -P 0x22 0 1M" "$IMG" >/dev/null' \
    --workload-arg --mix=write:35,zero:25,trim:25,flush:10 \
    --workload-arg --hot=0.5 \
    qcow2 "$seed" 1200 \
    qemu-img create -q -f qcow2 -o cluster_size=1k IMG 1M
