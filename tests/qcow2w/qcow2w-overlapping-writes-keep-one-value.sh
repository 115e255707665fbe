#!/bin/sh
# Claim: many writes and zero writes racing for the same few unallocated
# clusters (24 at once, from four connections, on sector-aligned
# overlapping ranges) leave every sector holding exactly one of the values
# written to it, whole, and the image clean under qemu-img check and equal
# to what was read.  On 64 KiB clusters, on extended L2 entries (writes
# that share subclusters), on 512-byte clusters (every round allocates
# L2 tables and refcount blocks), and on an overlay whose partial writes
# copy backing data.  The client and its checks: qcow2w-overlap.c.
# QW_SEED=N replays a run; DS_TEST_SERVER=qemu-nbd runs it against
# qemu-nbd.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2w/qcow2w-functions.sh"

qw_seed tests/qcow2w/qcow2w-overlapping-writes-keep-one-value.sh

# qemu-nbd 7.2 corrupts its refcounts when zero writes race with writes
# to the same cluster: against it, only writes race.
zeros=12
[ "$QW_SERVER" = qemu-nbd ] && zeros=0

# overlap NAME ROUNDS REGION [INITIAL]: run the client on $T/NAME.qcow2,
# already created, then check and compare the image.
overlap()
{
    local name=$1 rounds=$2 region=$3 initial=${4:-}
    qw_serve "$name" "$T/$name.qcow2"
    "$QW_BIN/qcow2w-overlap" --uri "$QW_URI" --seed "$QW_SEED" \
        --rounds "$rounds" --region "$region" --writers 24 --zeros $zeros \
        --out "$T/$name.shadow" ${initial:+--initial "$initial"} ||
        fail "$name: the client failed (server log:" \
            "$(tail -n 5 "$T/$name.log"))"
    qw_stop "$name"
    qw_check "$name" "$T/$name.qcow2"
    qw_compare "$name" "$T/$name.qcow2" "$T/$name.shadow"
    rm -f "$T/$name.shadow"
    echo "ok: $name"
}

qemu-img create -q -f qcow2 "$T/c64k.qcow2" 16M
overlap c64k 64 192k

qemu-img create -q -f qcow2 -o cluster_size=64k,extended_l2=on \
    "$T/subclusters.qcow2" 16M
overlap subclusters 96 128k

qemu-img create -q -f qcow2 -o cluster_size=512 "$T/c512.qcow2" 4M
overlap c512 600 4k

qw_make_raw "$T/base.raw" $((16 * 1024 * 1024)) "$QW_SEED"
qemu-img convert -f raw -O qcow2 -o cluster_size=4k "$T/base.raw" \
    "$T/base.qcow2"
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 \
    -o cluster_size=64k "$T/overlay.qcow2"
overlap overlay 96 128k "$T/base.raw"
