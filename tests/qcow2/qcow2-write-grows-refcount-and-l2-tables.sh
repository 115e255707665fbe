#!/bin/sh
# Claim: with 512-byte clusters, writing many megabytes outgrows the
# refcount table qemu-img created (it moves, larger, with new refcount
# blocks that count themselves), and writes far out into a large disk
# allocate L2 tables under a large L1 table; qemu-img check finds no
# error and no leak and qemu reads what was written.  The same with
# 64-bit refcounts, whose blocks cover only 32 KiB each.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"
POKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"

for bits in 16 64; do
    img="$T/grow-$bits.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=$bits \
        "$img" 1G
    rt0=$($POKE get "$img" 48 '>Q')
    ds_start "grow-$bits" "$img"
    # 24 MiB in 1 MiB writes, then scattered writes far out.
    set --
    i=0
    while [ $i -lt 24 ]; do
        set -- "$@" -c "write -P $((i + 1)) ${i}M 1M"
        i=$((i + 1))
    done
    for off in 100M 333M 512M 700M 1000M 1073741312; do
        set -- "$@" -c "write -P 0xee $off 512"
    done
    qemu-io -f raw "$@" "$DS_URI" >/dev/null || fail "grow-$bits: writes"
    ds_stop "$DS_PID" || fail "grow-$bits: diskserve exited with an error"
    qemu-img check -q "$img" || fail "grow-$bits: qemu-img check"
    rt1=$($POKE get "$img" 48 '>Q')
    [ "$rt1" != "$rt0" ] || fail "grow-$bits: refcount table did not move"
    clusters=$($POKE get "$img" 56 '>I')
    [ "$clusters" -gt 1 ] || fail "grow-$bits: refcount table not larger"
    set --
    i=0
    while [ $i -lt 24 ]; do
        set -- "$@" -c "read -P $((i + 1)) ${i}M 1M"
        i=$((i + 1))
    done
    for off in 100M 333M 512M 700M 1000M 1073741312; do
        set -- "$@" -c "read -P 0xee $off 512"
    done
    qemu-io -f qcow2 "$@" "$img" >/dev/null || fail "grow-$bits: contents"
    echo "ok: refcount_bits=$bits, refcount table of $clusters clusters"
done

# The same through the shadow workload, all over a 512-byte cluster disk.
img="$T/shadow.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 "$img" 48M
write_and_judge shadow "$img" --max-len 262144 --hot 0 --ops 250
