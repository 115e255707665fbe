#!/bin/sh
# Claim: `diskserve-img create -f vhdx -b PARENT` makes differencing
# files (size, logical sector size and block size from the parent;
# parent_linkage its DataWriteGuid; relative_path for a relative PARENT,
# absolute_win32_path for an absolute one) that libvhdi accepts as the
# parent's child (set_parent checks the linkage).  For 512- and
# 4096-byte sectors: a base written by a concurrent workload, a child in
# a subfolder over it, and a grandchild naming the child by absolute
# path, each written by a concurrent workload of unaligned writes and
# flushes from three connections, read back in libvhdi through the
# chain as the shadow copies the clients kept, byte for byte; parents
# never change once they have children.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vhdx/vhdx-write-functions.sh"
require sha256sum
size=$((24 << 20))

for sector in 512 4096; do
    base="$T/base-$sector.vhdx"
    mkdir -p "$T/sub-$sector"
    child="$T/sub-$sector/child.vhdx"
    grand="$T/grand-$sector.vhdx"
    "$DISKSERVE_IMG" create -q -f vhdx \
        -o block_size=1M,logical_sector_size=$sector "$base" $size ||
        fail "create base"
    truncate -s $size "$base.shadow"
    workload "base-$sector" "$base" 3 "$base.shadow" --ops 150 \
        --hot $((2 << 20)) --max-len $((160 << 10))
    judge "base-$sector" "$base" "$base.shadow"

    "$DISKSERVE_IMG" create -q -f vhdx -b "../base-$sector.vhdx" "$child" ||
        fail "create child"
    sum=$(sha256sum <"$base")
    cp "$base.shadow" "$child.shadow"
    workload "child-$sector" "$child" 3 "$child.shadow" --ops 150 \
        --mix write:90,flush:6 --hot $((2 << 20)) --max-len $((160 << 10))
    judge "child-$sector" "$child" "$child.shadow" "$base"
    cmp -s "$child.shadow" "$base.shadow" && fail "the child changed nothing"

    "$DISKSERVE_IMG" create -q -f vhdx -b "$child" "$grand" ||
        fail "create grandchild"
    cp "$child.shadow" "$grand.shadow"
    csum=$(sha256sum <"$child")
    workload "grand-$sector" "$grand" 3 "$grand.shadow" --ops 150 \
        --mix write:90,flush:6 --hot $((2 << 20)) --max-len $((160 << 10))
    judge "grand-$sector" "$grand" "$grand.shadow" "$child" "$base"
    [ "$(sha256sum <"$base")" = "$sum" ] || fail "the base changed"
    [ "$(sha256sum <"$child")" = "$csum" ] || fail "the child changed"
    echo "ok: $sector-byte sectors, chain of 3"
done
