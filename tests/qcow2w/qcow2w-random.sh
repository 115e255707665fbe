#!/bin/sh
# qcow2w-random.sh VARIANT REQUESTS: one run of the random workload
# (qcow2w-random) on a fresh 64 MiB qcow2 image of the given kind, served
# read-write, then qemu-img check (no errors, no leaks) and qemu-img
# compare against the client's shadow.  The qcow2w-random-*.sh tests
# call it; QW_SEED=N replays a run, DS_TEST_SERVER=qemu-nbd runs it
# against qemu-nbd.
#
# Variants:
#   64k          default clusters (64 KiB)
#   4k           4 KiB clusters: many L2 tables and refcount blocks
#   subclusters  extended L2 entries, 32 KiB clusters of 1 KiB subclusters
#   lazy         lazy_refcounts=on
#   backing      a 4 KiB-cluster overlay over a seeded 64 KiB-cluster
#                backing file, trims may reveal the backing data
#   compressed   a seeded disk converted with qemu-img convert -c
#   luks         LUKS encryption, 4 KiB clusters
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2w/qcow2w-functions.sh"

variant=$1
requests=$2
qw_seed "tests/qcow2w/qcow2w-random-$variant-*.sh"
size=$((64 * 1024 * 1024))
img="$T/disk.qcow2"
enc=""
initial=""
reveal=""

case $variant in
64k)
    qemu-img create -q -f qcow2 "$img" $size ;;
4k)
    qemu-img create -q -f qcow2 -o cluster_size=4k "$img" $size ;;
subclusters)
    qemu-img create -q -f qcow2 -o cluster_size=32k,extended_l2=on \
        "$img" $size ;;
lazy)
    qemu-img create -q -f qcow2 -o lazy_refcounts=on "$img" $size ;;
backing)
    qw_make_raw "$T/base.raw" $size "$QW_SEED"
    qemu-img convert -f raw -O qcow2 "$T/base.raw" "$T/base.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=4k \
        -b "$T/base.qcow2" -F qcow2 "$img"
    initial="$T/base.raw"
    reveal="$T/base.raw" ;;
compressed)
    qw_make_raw "$T/base.raw" $size "$QW_SEED"
    qemu-img convert -c -f raw -O qcow2 "$T/base.raw" "$img"
    initial="$T/base.raw" ;;
luks)
    qw_create_luks "$img" $size cluster_size=4k
    enc=luks ;;
*)
    fail "unknown variant $variant" ;;
esac
cluster=$(qemu-img info --output=json "$img" |
    sed -n 's/^ *"cluster-size": \([0-9]*\).*/\1/p')
echo "cluster size $cluster"

# qemu-nbd 7.2 loses data when a zero write and another write share a
# cluster (both in flight): against it, a zero write waits for any
# change to its clusters.
granule=1
[ "$QW_SERVER" = qemu-nbd ] && granule=$cluster

qw_serve server "$img" "$enc"
"$QW_BIN/qcow2w-random" --uri "$QW_URI" --seed "$QW_SEED" \
    --requests "$requests" --out "$T/shadow.raw" --granule "$granule" \
    ${initial:+--initial "$initial"} ${reveal:+--reveal "$reveal"} ||
    fail "$variant: the workload failed (server log:" \
        "$(tail -n 5 "$T/server.log"))"
qw_stop server
qw_check "$variant" "$img" "$enc"
qw_compare "$variant" "$img" "$T/shadow.raw" "$enc"
echo "ok: $variant: $requests requests; the image checks clean and" \
    "equals the shadow"
