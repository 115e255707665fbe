#!/bin/sh
# Claim: a differencing VHDX child (tests/vhdx/vhdxdiff.py over a
# qemu-made base and a middle child, with FULLY_PRESENT,
# PARTIALLY_PRESENT, NOT_PRESENT and UNDEFINED blocks) takes a random
# concurrent workload of unaligned writes and flushes from three
# connections; afterwards libvhdi, reading the chain with set_parent,
# reads the shadow copy the clients kept, byte for byte, as does a
# read-only export; the parents are unchanged.  A second chain also
# takes zero writes and trims (whole blocks become ZERO, which libvhdi
# reads from the parent where [MS-VHDX] says zeros, so that chain is
# judged by a read-only export against its shadow).  Blocks that showed
# the parent become PARTIALLY_PRESENT, with sector bitmap bits for the
# sectors written.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vhdx/vhdx-write-functions.sh"
require sha256sum cmp
DIFF="/usr/bin/python3 $abs_top_srcdir/tests/vhdx/vhdxdiff.py"

raw="$T/base.raw"
truncate -s 16M "$raw"
/usr/bin/python3 -c '
import random, sys
r = random.Random(int(sys.argv[1]))
with open(sys.argv[2], "r+b") as f:
    f.seek(1 << 20)
    f.write(r.randbytes(9 << 20))
' "$SEED" "$raw"
base="$T/base.vhdx"
qemu-img convert -q -f raw -O vhdx -o subformat=dynamic,block_size=1M \
    "$raw" "$base"
mid="$T/mid.vhdx"
$DIFF "$mid" "$base" '.\base.vhdx' $((SEED + 1)) FPNPNFUNPPNNFNPN \
    "$raw" "$mid.shadow"

# served IMG OUT: what a read-only export of IMG reads, into OUT.
served()
{
    ds_start "ro-$(basename "$1")" -r -f vhdx "$1"
    qemu-img convert -q -f raw -O raw "$DS_URI" "$2" ||
        fail "$1: reading the export"
    ds_stop "$DS_PID" || fail "$1: read-only server exit status $?"
}

parents=$(cat "$base" "$mid" | sha256sum)
top="$T/top.vhdx"
$DIFF "$top" "$mid" mid.vhdx $((SEED + 2)) NPFNPNUPNFPFNNPP \
    "$mid.shadow" "$top.shadow"
workload writes "$top" 3 "$top.shadow" --ops 200 --mix write:90,flush:6 \
    --hot $((2 << 20)) --max-len $((160 << 10)) --inflight 8
judge writes "$top" "$top.shadow" "$mid" "$base"
served "$top" "$top.ro"
cmp "$top.ro" "$top.shadow" || fail "read-only export differs from shadow"
/usr/bin/python3 -c '
import struct, sys
with open(sys.argv[1], "rb") as f:
    f.seek(192 << 10)
    t = f.read(64 << 10)
    n = struct.unpack_from("<I", t, 8)[0]
    for i in range(n):
        g, off, ln = struct.unpack_from("<16sQI", t, 16 + 32 * i)
        if g.hex() == "6677c22d23f600429d64115e9bfd4a08":
            f.seek(off)
            bat = struct.unpack("<17Q", f.read(17 * 8))
            states = [e & 7 for e in bat[:16]]
            assert 0 not in states[:8] or 7 in states, states
            print("top block states:", states)
' "$top" || fail "BAT of the written child"
echo "ok: writes; libvhdi and a read-only export read the shadow"

top2="$T/top2.vhdx"
$DIFF "$top2" "$mid" mid.vhdx $((SEED + 3)) NPFNPNUPNFPFNNPP \
    "$mid.shadow" "$top2.shadow"
workload mixed "$top2" 3 "$top2.shadow" --ops 200 \
    --hot $((2 << 20)) --max-len $((1536 << 10)) --inflight 8
served "$top2" "$top2.ro"
cmp "$top2.ro" "$top2.shadow" || fail "$top2: read-only export differs"
echo "ok: writes, zero writes and trims; a read-only export reads the shadow"
[ "$(cat "$base" "$mid" | sha256sum)" = "$parents" ] ||
    fail "a parent changed"
