#!/bin/sh
# Writes, write_zeroes and trims through our driver land in every enabled
# bitmap at its granularity, and not in disabled ones; after close the
# bitmaps are stored: qemu-img info lists them without in-use, qemu-img
# check finds the image clean, and qemu-nbd exports the same dirty runs
# as a copy of the image that qemu-io changed the same way.  A bitmap
# added as not persistent is gone after close.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps/bitmaps-functions.sh"

for cs in 64k 512; do
    base="$T/base-$cs.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=$cs "$base" 100M
    qemu-img bitmap --add -g 512 "$base" b512
    qemu-io -c 'write 1000 3000' "$base" >/dev/null
    qemu-img bitmap --add -g 64k "$base" b64k
    qemu-io -c 'write 20M 1k' "$base" >/dev/null
    qemu-img bitmap --add -g 1M --disable "$base" b1m
    qemu-img bitmap --add -g 4k "$base" b4k
    qemu-io -c 'write 30M 1M' "$base" >/dev/null

    ours="$T/ours-$cs.qcow2"
    theirs="$T/theirs-$cs.qcow2"
    cp "$base" "$ours"
    cp "$base" "$theirs"
    "$PROBE" -w "$ours" write 50M 4k write 5000 100 zero 60M 100k \
        trim 2M 64k write 99M 1M add tmp 64k 0 write 70M 512 ||
        fail "writes through the driver failed"
    qemu-io -c 'write 50M 4k' -c 'write 5000 100' -c 'write -z 60M 100k' \
        -c 'discard 2M 64k' -c 'write 99M 1M' -c 'write 70M 512' \
        "$theirs" >/dev/null

    for b in b512 b64k b4k; do
        [ "$(qemu_bitmap_flags "$ours" $b | cut -d' ' -f1)" = auto ] ||
            fail "$b: flags after close: $(qemu_bitmap_flags "$ours" $b)"
    done
    [ "$(qemu_bitmap_flags "$ours" b1m)" = "none 1048576" ] ||
        fail "b1m: $(qemu_bitmap_flags "$ours" b1m)"
    [ "$(qemu_bitmap_flags "$ours" tmp)" = missing ] ||
        fail "a bitmap that was not persistent was stored"
    qemu_clean "$ours"
    for b in b512 b64k b4k b1m; do
        qemu_map "$ours" $b >"$T/ours.map"
        qemu_map "$theirs" $b >"$T/theirs.map"
        diff -u "$T/theirs.map" "$T/ours.map" >&2 ||
            fail "bitmap $b (clusters $cs): stored runs differ from qemu's"
        [ $b = b1m ] || ! diff -q "$T/ours.map" - >/dev/null <<EOT ||
$(qemu_map "$base" $b)
EOT
            fail "bitmap $b recorded nothing"
    done
    # Reopened, our driver reads back what it stored.
    maps_agree "$ours" b512 b64k b4k
done
