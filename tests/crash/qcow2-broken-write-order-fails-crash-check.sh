#!/bin/sh
# The qcow2 crash tests can tell a wrong write order: with each rule of
# the qcow2 driver's write order broken on purpose
# (DISKSERVE_QCOW2_BREAK=RULE), a workload that exercises the rule must
# yield crash states that crash-check rejects, and some of them must be
# broken as found (qemu-img check before opening, or a sector read
# back), not only after the checker's own writes:
#
#   refcount-before-l2, l2-before-refcount, data-before-mapping,
#   l2-before-l1: the random allocation workload on 512-byte clusters;
#   block-count-before-table (a new refcount block outside the range it
#   describes is named by the refcount table before the block counting
#   it is written back): 64-bit refcounts on 512-byte clusters, where a
#   block describes one L2 span of clusters, and whole spans written one
#   after another into an empty image, so that within 72 spans a run of
#   data clusters starts on a range boundary and fills the range.
#
# CRASH_SEED=N replays a seed (and the two after it).
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/crash/broken-order-functions.sh"
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
for rule in refcount-before-l2 l2-before-refcount data-before-mapping \
    l2-before-l1 block-count-before-table; do
    case $rule in
    block-count-before-table)
        set -- --requests 18 \
            --workload-arg --seq=1 --workload-arg --seq-sectors=256 \
            --workload-arg --mix=write:1 --workload-arg --fua=0.1 \
            qcow2 SEED 250 \
            qemu-img create -q -f qcow2 \
            -o cluster_size=512,refcount_bits=64 IMG 3M
        ;;
    *)
        set -- --requests 200 --workload-arg --hot=0.3 \
            qcow2 SEED 250 \
            qemu-img create -q -f qcow2 -o cluster_size=512 IMG 1M
        ;;
    esac
    caught $rule "$seed" --server-env DISKSERVE_QCOW2_BREAK=$rule "$@"
done
