#!/bin/sh
# Claim: a differencing VHDX chain (a qemu-made dynamic base, then two
# children written by tests/vhdx/vhdxdiff.py with FULLY_PRESENT,
# PARTIALLY_PRESENT (sector bitmaps with random runs, random bytes in the
# absent sectors), NOT_PRESENT, UNDEFINED, ZERO and UNMAPPED blocks; the
# top child in a subdirectory naming its parent as "..\mid.vhdx", the
# middle one as ".\base.vhdx") is served read-only with the bytes libvhdi
# reads through the same chain and the bytes the fixture writer expects,
# for the whole disk.  libvhdi reads a ZERO block of a differencing file
# from the parent, where [MS-VHDX] 2.5.1.1 says zeros (MUST): the chains
# compared with libvhdi have no ZERO or UNMAPPED block; a second chain
# with them is compared with the fixture's shadow.  qemu:allocation-depth
# reports 1, 2 and 3.  A parent found only through absolute_win32_path
# opens.  A parent_linkage that is not the parent's DataWriteGuid, a
# missing parent, a locator naming the file itself, and a parent locator
# whose relative_path Length runs past the item are refused with one line
# naming the child.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vhdx/vhdx-functions.sh"
require qemu-img nbdinfo timeout /usr/bin/python3 cmp
DIFF="/usr/bin/python3 $abs_top_srcdir/tests/vhdx/vhdxdiff.py"
SEED=${SEED:-$(date +%s)}
echo "seed: $SEED"

raw="$T/base.raw"
truncate -s 16M "$raw"
/usr/bin/python3 -c '
import random, sys
r = random.Random(int(sys.argv[1]))
with open(sys.argv[2], "r+b") as f:
    f.seek(1 << 20)
    f.write(r.randbytes(6 << 20))
    f.seek(10 << 20)
    f.write(r.randbytes(3 << 20))
' "$SEED" "$raw"
base="$T/base.vhdx"
qemu-img convert -q -f raw -O vhdx -o subformat=dynamic,block_size=1M \
    "$raw" "$base"
mkdir "$T/sub"

# libvhdi OUT CHILD PARENT...: the chain's bytes as libvhdi reads them.
libvhdi()
{
    /usr/bin/python3 - "$@" <<'PY'
import pyvhdi, sys
files = []
for p in sys.argv[2:]:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
for child, parent in zip(files, files[1:]):
    child.set_parent(parent)
f = files[0]
size = f.get_media_size()
with open(sys.argv[1], 'wb') as out:
    off = 0
    while off < size:
        n = min(1 << 20, size - off)
        out.write(f.read_buffer_at_offset(n, off))
        off += n
PY
}

# served IMG: what diskserve -r serves, in IMG.ds.raw.
served()
{
    ds_start "$(basename "$1")" -r "$1"
    qemu-img convert -q -f raw -O raw "$DS_URI" "$1.ds.raw" ||
        fail "$1: reading the export failed"
    nbdinfo --map=qemu:allocation-depth "$DS_URI" >"$1.depth" ||
        fail "$1: nbdinfo --map failed"
    ds_stop "$DS_PID" || fail "$1: server exit status $?"
}

# Chain 1 (libvhdi's states): F, P, N, U.
mid="$T/mid.vhdx" top="$T/sub/top.vhdx"
$DIFF "$mid" "$base" '.\base.vhdx' $((SEED + 1)) FPNPNFUNPPNNFNPN \
    "$raw" "$mid.shadow"
$DIFF "$top" "$mid" '..\mid.vhdx' $((SEED + 2)) NPFNPNUPNFPFNNPP \
    "$mid.shadow" "$top.shadow"
for img in "$mid" "$top"; do
    served "$img"
    cmp "$img.ds.raw" "$img.shadow" ||
        fail "$img: served bytes differ from the fixture's shadow"
done
libvhdi "$mid.lib" "$mid" "$base"
libvhdi "$top.lib" "$top" "$mid" "$base"
cmp "$mid.ds.raw" "$mid.lib" || fail "$mid: differs from libvhdi"
cmp "$top.ds.raw" "$top.lib" || fail "$top: differs from libvhdi"
cmp -s "$top.ds.raw" "$mid.ds.raw" && fail "the top child changed nothing"
echo "chain of 3: served = libvhdi = shadow (2 levels and 3 levels)"
for d in 1 2 3; do
    grep -qE "[[:space:]]$d[[:space:]]" "$top.depth" || {
        cat "$top.depth" >&2
        fail "$top: no extent at allocation depth $d"
    }
done
echo "allocation depths 1, 2, 3 reported"

# Chain 2: ZERO and UNMAPPED read as zeros over a parent with data.
zm="$T/zm.vhdx"
$DIFF "$zm" "$mid" mid.vhdx $((SEED + 3)) ZMPZFMNZUP "$mid.shadow" \
    "$zm.shadow"
served "$zm"
cmp "$zm.ds.raw" "$zm.shadow" || fail "$zm: served bytes differ from shadow"
echo "ZERO / UNMAPPED: served = shadow"

# Found through absolute_win32_path only ("\\?\C:" + the absolute path).
abs="$T/abs.vhdx"
$DIFF "$abs" "$base" unused $((SEED + 4)) PFN "$raw" "$abs.shadow" \
    norel abs="$base"
served "$abs"
cmp "$abs.ds.raw" "$abs.shadow" || fail "$abs: served bytes differ"
echo "absolute_win32_path: served = shadow"

img="$T/wrong-linkage.vhdx"
$DIFF "$img" "$base" base.vhdx 1 FP "$raw" "$T/x" \
    linkage=0badc0de-1234-4321-8765-0123456789ab
refused "$img" "not the parent_linkage 0BADC0DE-1234-4321-8765-0123456789AB"
# parent_linkage2 naming the parent makes the same file acceptable.
img="$T/linkage2.vhdx"
$DIFF "$img" "$base" base.vhdx 1 FP "$raw" "$img.shadow" \
    linkage=0badc0de-1234-4321-8765-0123456789ab \
    linkage2="$(/usr/bin/python3 -c '
import sys, uuid
with open(sys.argv[1], "rb") as f:
    f.seek(64 << 10); h1 = f.read(48); f.seek(128 << 10); h2 = f.read(48)
h = max(h1, h2, key=lambda h: int.from_bytes(h[8:16], "little"))
print(uuid.UUID(bytes_le=h[32:48]))' "$base")"
served "$img"
cmp "$img.ds.raw" "$img.shadow" || fail "$img: served bytes differ"
echo "parent_linkage2: served = shadow"

img="$T/orphan.vhdx"
$DIFF "$img" "$base" 'gone\base.vhdx' 1 FP "$raw" "$T/x"
refused "$img" "parent not found: relative_path 'gone\\base.vhdx'"

img="$T/loop.vhdx"
$DIFF "$img" "$base" loop.vhdx 1 FP "$raw" "$T/x"
refused "$img" "loops back to a file already in the chain (level 0)"

# A relative_path ValueLength past the end of the locator item.
img="$T/bad-locator.vhdx"
$DIFF "$img" "$base" base.vhdx 1 FP "$raw" "$T/x"
/usr/bin/python3 - "$img" <<'PY'
import struct, sys, uuid
LOC = uuid.UUID('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C').bytes_le
with open(sys.argv[1], 'r+b') as f:
    f.seek(2 << 20)
    t = f.read(64 << 10)
    for i in range(struct.unpack_from('<H', t, 10)[0]):
        g, off, length = struct.unpack_from('<16sII', t, 32 + 32 * i)
        if g == LOC:
            break
    # Entry 1 is relative_path: its ValueLength at entry offset 10.
    f.seek((2 << 20) + off + 20 + 12 + 10)
    f.write(struct.pack('<H', length))
PY
refused "$img" "parent locator entry 1: ValueOffset"
