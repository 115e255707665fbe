#!/bin/sh
# Claim: VHDX files qemu-img convert makes from a raw disk (random data,
# holes, explicit zero runs, unaligned pieces) with block sizes 1, 8, 32
# and 256 MiB, dynamic and fixed, block_state_zero on and off, are served
# read-only with exactly the raw disk's bytes (qemu-img compare over NBD),
# libvhdi reads the same bytes from each file, and base:allocation marks
# a block as data exactly when the file holds it: every block of a fixed
# file made with block_state_zero=off (as qemu-img map says), and
# otherwise the blocks where the source has a non-zero byte (the others
# are NOT_PRESENT or ZERO) (qemu's VHDX driver reports no block status,
# so qemu-img map calls everything data there; qemu-img compare already
# proves our holes read as zeros).
#
# 4096-byte logical sectors: qemu-img cannot create them (no option), so a
# dynamic 1 MiB-block file under 4 GiB has its Logical (and Physical)
# Sector Size items set to 4096: below one chunk the BAT layout is the
# same for both sector sizes.  qemu cannot open that file; libvhdi and
# the export are compared with the raw source instead.
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img nbdinfo /usr/bin/python3
/usr/bin/python3 -c 'import pyvhdi' 2>/dev/null || {
    echo "SKIP: python3-libvhdi not installed" >&2
    exit 77
}
CHECK="/usr/bin/python3 $abs_top_srcdir/tests/vhdx/vhdx-check.py"
POKE="/usr/bin/python3 $abs_top_srcdir/tests/vhdx/vhdxpoke.py"
SEED=${SEED:-$(date +%s)}
echo "seed: $SEED"

# The source: 520 MiB (more than two 256 MiB blocks), mostly holes.
src="$T/src.raw"
truncate -s 520M "$src"
# put OFFSET LENGTH: seeded random bytes at OFFSET.
put()
{
    /usr/bin/python3 -c '
import random, sys
seed, off, n, path = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                      sys.argv[4])
rnd = random.Random(seed * 1000003 + off)
with open(path, "r+b") as f:
    f.seek(off)
    f.write(rnd.randbytes(n))
' "$SEED" "$1" "$2" "$src"
}
M=1048576
put 0 $((3 * M))
put $((5 * M + 123)) 70001
put $((40 * M)) $((9 * M))
put $((100 * M)) $((40 * M))
dd if=/dev/zero of="$src" bs=1M seek=110 count=10 conv=notrunc 2>/dev/null
put $((300 * M - 4096)) 8192
put $((519 * M)) $M

# serve NAME IMAGE SECTOR: export IMAGE and compare it with the source.
serve()
{
    local name=$1 img=$2 sector=$3
    ds_start "$name" -r "$img"
    [ "$(nbdinfo --size "$DS_URI")" = "$(stat -c %s "$src")" ] ||
        fail "$name: export size differs from the source"
    qemu-img compare -f raw -F raw "$src" "$DS_URI" >"$T/$name.cmp" 2>&1 || {
        cat "$T/$name.cmp" >&2
        fail "$name: export differs from the source"
    }
    nbdinfo --map "$DS_URI" >"$T/$name.map" || fail "$name: nbdinfo --map"
    ds_stop "$DS_PID" || fail "$name: server exit status $?"
    $CHECK pyvhdi "$img" "$src" "$sector" || fail "$name: libvhdi"
}

n=0
for bs in 1M 8M 32M 256M; do
    for sub in dynamic fixed; do
        for bsz in on off; do
            name="$sub-$bs-zero$bsz"
            img="$T/$name.vhdx"
            qemu-img convert -f raw -O vhdx \
                -o subformat=$sub,block_size=$bs,block_state_zero=$bsz \
                "$src" "$img" 2>"$T/$name.conv" || {
                cat "$T/$name.conv" >&2
                fail "$name: qemu-img convert"
            }
            serve "$name" "$img" 512
            bytes=$((${bs%M} * M))
            # A fixed file made with block_state_zero=on marks all-zero
            # blocks ZERO (hole,zero) like a dynamic one.
            kind=$sub
            [ $bsz = on ] && kind=dynamic
            $CHECK map "$T/$name.map" "$src" "$bytes" "$kind" ||
                fail "$name: base:allocation"
            if [ "$kind" = fixed ]; then
                # qemu-img map: one data extent over the whole disk.
                qemu-img map --output=json -f vhdx "$img" >"$T/$name.qmap"
                awk '$3 == 0 { d += $2 } END { print d }' "$T/$name.map" \
                    >"$T/$name.dsdata"
                /usr/bin/python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(open(sys.argv[1])) if e["data"]))
' "$T/$name.qmap" | cmp -s - "$T/$name.dsdata" ||
                    fail "$name: data bytes differ from qemu-img map"
            fi
            rm -f "$img"
            n=$((n + 1))
            echo "ok: $name"
        done
    done
done

# 4096-byte logical sectors (see above), from a 1 MiB-block dynamic file.
name=dynamic-1M-4k
img="$T/$name.vhdx"
qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M \
    "$src" "$img"
$POKE set "$img" "$($POKE item "$img" logical)" I 4096
$POKE set "$img" "$($POKE item "$img" physical)" I 4096
serve "$name" "$img" 4096
$CHECK map "$T/$name.map" "$src" $M dynamic || fail "$name: base:allocation"
echo "ok: $name"
echo "$((n + 1)) images match"
