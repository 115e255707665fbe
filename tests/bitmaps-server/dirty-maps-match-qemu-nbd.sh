#!/bin/bash
# The same qemu-img-made image with three bitmaps (512 B, 64 KiB and
# 1 MiB granularity, one disabled), served by diskserve and by
# `qemu-nbd -r -B`: nbdinfo --map of every qemu:dirty-bitmap:NAME context
# is identical, and qemu's own client (qemu-img map with x-dirty-bitmap,
# where dirty reads as "data": false) sees the same dirty runs from both.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps-server/bitmap-functions.sh"

img=$T/disk.qcow2
make_bitmap_image "$img"

ds_start ds -r -f qcow2 "$img"
qemu_nbd_start qn -r -f qcow2 -B fine -B mid -B coarse "$img"

qemu_map()
{
    local opts="driver=nbd,server.type=unix,server.path=$1"
    opts+=",x-dirty-bitmap=qemu:dirty-bitmap:$2"
    qemu-img map --output=json --image-opts "$opts"
}

for b in fine mid coarse; do
    nbdinfo --map="qemu:dirty-bitmap:$b" "$DS_URI" >"$T/ds-$b.map" ||
        fail "nbdinfo --map of $b against diskserve failed: $(cat "$T/ds.log")"
    nbdinfo --map="qemu:dirty-bitmap:$b" "$QN_URI" >"$T/qn-$b.map"
    if ! cmp -s "$T/ds-$b.map" "$T/qn-$b.map"; then
        diff "$T/qn-$b.map" "$T/ds-$b.map" | head -20 >&2
        fail "bitmap $b: diskserve's map differs from qemu-nbd's"
    fi
    dirty_runs <"$T/ds-$b.map" >"$T/ds-$b.runs"
    [ -s "$T/ds-$b.runs" ] || fail "bitmap $b has no dirty run"

    qemu_map "$DS_SOCK" "$b" | qemu_map_dirty_runs >"$T/ds-$b.qruns"
    qemu_map "$QN_SOCK" "$b" | qemu_map_dirty_runs >"$T/qn-$b.qruns"
    cmp -s "$T/qn-$b.qruns" "$T/ds-$b.qruns" ||
        fail "bitmap $b: qemu-img map sees other dirty runs from diskserve"
    cmp -s "$T/ds-$b.runs" "$T/ds-$b.qruns" ||
        fail "bitmap $b: qemu-img map and nbdinfo disagree"
done

# The granularities show: fine marks the 1000-byte write as 1024 bytes,
# mid rounds the 65537-byte write at 21 MiB up to 128 KiB, and coarse
# holds neither the writes before it nor those after it was disabled.
grep -qx "$((1 << 20)) 1024" "$T/ds-fine.runs" ||
    fail "fine: no 1024-byte run at 1 MiB: $(cat "$T/ds-fine.runs")"
grep -qx "$((21 << 20)) 131072" "$T/ds-mid.runs" ||
    fail "mid: no 128 KiB run at 21 MiB: $(cat "$T/ds-mid.runs")"
! grep -q "^$((50 << 20)) " "$T/ds-coarse.runs" ||
    fail "coarse records a write made after it was disabled"
grep -qx "$((40 << 20)) $((2 << 20))" "$T/ds-coarse.runs" ||
    fail "coarse: no 2 MiB run at 40 MiB: $(cat "$T/ds-coarse.runs")"
# The partial last granule of coarse ends at the image end.
tail -n1 "$T/ds-coarse.runs" | grep -qx "$((256 << 20)) 1536" ||
    fail "coarse: last run $(tail -n1 "$T/ds-coarse.runs")"
ds_stop "$DS_PID" || fail "diskserve exit status $?"
