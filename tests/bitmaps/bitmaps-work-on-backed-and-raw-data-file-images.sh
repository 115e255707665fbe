#!/bin/sh
# Bitmaps work on an overlay with a backing file (the header's extension
# area is rewritten around the backing file name) and on a qcow2 holding
# only metadata over a raw data file (data_file_raw=on): added with
# diskserve-img bitmap, written through the driver, then qemu-nbd exports
# the same runs as qemu-io's writes make on a twin image, qemu-img check
# is clean, and the backing file and data file are still named.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps/bitmaps-functions.sh"
cd "$T"

qemu-img create -q -f qcow2 base.qcow2 32M
qemu-io -c 'write -P 1 0 32M' base.qcow2 >/dev/null
for side in ours theirs; do
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "o-$side.qcow2"
    qemu-img create -q -f raw "d-$side.raw" 32M
    qemu-img create -q -f qcow2 \
        -o "data_file=d-$side.raw,data_file_raw=on" "r-$side.qcow2" 32M
done

"$DISKSERVE_IMG" bitmap --add -g 4k o-ours.qcow2 b || fail "add on overlay"
qemu-img bitmap --add -g 4k o-theirs.qcow2 b
"$DISKSERVE_IMG" bitmap --add -g 64k r-ours.qcow2 b || fail "add on data file"
qemu-img bitmap --add -g 64k r-theirs.qcow2 b

"$PROBE" -w o-ours.qcow2 write 1M 10k zero 5M 64k write 31M 1M ||
    fail "writes to the overlay"
qemu-io -c 'write -P 0xa5 1M 10k' -c 'write -z 5M 64k' -c 'write -P 0xa5 31M 1M' \
    o-theirs.qcow2 >/dev/null
"$PROBE" -w r-ours.qcow2 write 2M 3k trim 8M 128k ||
    fail "writes to the data file image"
qemu-io -c 'write -P 0xa5 2M 3k' -c 'discard 8M 128k' r-theirs.qcow2 >/dev/null

for f in o r; do
    qemu_clean "$f-ours.qcow2"
    qemu_map "$f-ours.qcow2" b >ours.map
    qemu_map "$f-theirs.qcow2" b >theirs.map
    [ -s ours.map ] || fail "$f: no dirty runs"
    diff -u theirs.map ours.map >&2 || fail "$f: runs differ from qemu's"
done
qemu-img info --output=json o-ours.qcow2 | grep -q '"backing-filename": "base.qcow2"' ||
    fail "overlay lost its backing file name"
qemu-img info --output=json r-ours.qcow2 | grep -q '"data-file": "d-ours.raw"' ||
    fail "image lost its data file name"
qemu-img compare -q o-ours.qcow2 o-theirs.qcow2 ||
    fail "overlay contents differ"
cmp d-ours.raw d-theirs.raw || fail "raw data files differ"

# Removing the last bitmap drops the extension; still clean, still backed.
"$DISKSERVE_IMG" bitmap --remove o-ours.qcow2 b || fail "remove"
qemu_clean o-ours.qcow2
[ "$(qemu_bitmap_flags o-ours.qcow2 b)" = missing ] ||
    fail "bitmap still listed"
qemu-img info --output=json o-ours.qcow2 | grep -q '"backing-filename": "base.qcow2"' ||
    fail "overlay lost its backing file name after the remove"
qemu-img compare -q o-ours.qcow2 o-theirs.qcow2 ||
    fail "contents changed by the remove"
