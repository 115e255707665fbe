#!/bin/sh
# Claim: VHDX files made by `qemu-img convert -O vhdx` (block_size 1, 8,
# 32 and 256 MiB, block_state_zero on and off, dynamic and fixed; a
# source with data, zeros and holes, 40 MiB so the last block is partial
# for most sizes) take a random concurrent workload from three
# connections at once (writes crossing blocks, zero writes with and
# without NO_HOLE and FAST_ZERO, trims, flushes, FUA; several requests in
# flight each) and afterwards qemu-img check finds nothing wrong, and
# both qemu-img and libvhdi read the file as the shadow copy the clients
# kept.  The file only grows by whole 1 MiB-aligned blocks.  The data
# extents `diskserve-img map` reports hold the shadow's bytes at the file
# offsets it names, and its other extents are zeros.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vhdx/vhdx-write-functions.sh"

raw="$T/src.raw"
truncate -s 40M "$raw"
/usr/bin/python3 -c '
import random, sys
r = random.Random(int(sys.argv[1]))
with open(sys.argv[2], "r+b") as f:
    for off, n in ((0, 1 << 20), (3 << 20, 5 << 20), (17 << 20, 300000),
                   (39 << 20, 1 << 20)):
        f.seek(off)
        f.write(r.randbytes(n))
' "$SEED" "$raw"

for geo in dynamic:1:on dynamic:1:off dynamic:8:on dynamic:8:off \
    dynamic:32:on dynamic:32:off dynamic:256:on dynamic:256:off \
    fixed:1:off fixed:32:off fixed:256:off; do
    IFS=: read -r sub bs zero <<EOT
$geo
EOT
    name="$sub-$bs-$zero"
    img="$T/$name.vhdx"
    qemu-img convert -q -f raw -O vhdx \
        -o subformat=$sub,block_size=${bs}M,block_state_zero=$zero \
        "$raw" "$img" || fail "$name: qemu-img convert"
    cp "$raw" "$T/$name.shadow"
    workload "$name" "$img" 3 "$T/$name.shadow" --ops 200 --hot $((2 << 20)) \
        --max-len $((192 << 10)) --inflight 8
    judge "$name" "$img" "$T/$name.shadow" qemu
    map_matches "$name" "$img" "$T/$name.shadow"
    size=$(stat -c %s "$img")
    [ $((size % 1048576)) = 0 ] || [ $sub = fixed ] ||
        fail "$name: file size $size not a multiple of 1 MiB"
    echo "ok: $name ($size bytes)"
    rm -f "$img" "$T/$name.shadow"
done
