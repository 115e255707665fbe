#!/bin/sh
# Claim: a zero write with FAST_ZERO over several blocks of a
# differencing VHDX child (made by `diskserve-img create -b` over a
# qemu-made parent) that is refused with ENOTSUP, because part of one
# block shows the parent and would need zeros written, changes nothing,
# also in the blocks before that one that could have been zeroed cheaply
# (a NOT_PRESENT block wholly covered, which would become ZERO; part of
# a FULLY_PRESENT block, which would be zeroed in place).  After each
# request the export reads the shadow copy kept by the client; fast zero
# writes that need no data written succeed; at the end libvhdi, reading
# the chain, and a read-only export read the shadow too, and the parent
# is unchanged.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vhdx/vhdx-write-functions.sh"
require sha256sum cmp
MB=$((1 << 20))

raw="$T/base.raw"
truncate -s 8M "$raw"
/usr/bin/python3 -c '
import random, sys
with open(sys.argv[2], "r+b") as f:
    f.write(random.Random(int(sys.argv[1])).randbytes(8 << 20))
' "$SEED" "$raw"
base="$T/base.vhdx"
qemu-img convert -q -f raw -O vhdx -o subformat=dynamic,block_size=1M \
    "$raw" "$base"
child="$T/child.vhdx"
"$DISKSERVE_IMG" create -q -f vhdx -b base.vhdx "$child" ||
    fail "create child"
sum=$(sha256sum <"$base")
cp "$raw" "$child.shadow"

ds_start child -f vhdx "$child"
/usr/bin/python3 - "$DS_URI" "$child.shadow" <<'PY' ||
import errno, sys
import nbd

MB = 1 << 20
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.can_fast_zero(), "the export does not offer FAST_ZERO"
shadow = open(sys.argv[2], "r+b")
size = h.get_size()


def check(what):
    shadow.flush()
    for off in range(0, size, MB):
        got = h.pread(MB, off)
        shadow.seek(off)
        want = shadow.read(MB)
        if got != want:
            i = next(i for i in range(MB) if got[i] != want[i])
            sys.exit("FAIL: after %s: byte %d reads 0x%02x, the shadow has "
                     "0x%02x" % (what, off + i, got[i], want[i]))
    print("ok:", what)


def write(off, n, byte):
    h.pwrite(bytes([byte]) * n, off)
    shadow.seek(off)
    shadow.write(bytes([byte]) * n)
    check("write %d+%d" % (off, n))


def zero(off, n, fast, refused=False):
    what = "%szero %d+%d" % ("fast " if fast else "", off, n)
    try:
        h.zero(n, off, nbd.CMD_FLAG_FAST_ZERO if fast else 0)
    except nbd.Error as e:
        if not (refused and e.errnum == errno.ENOTSUP):
            raise
        check(what + " (refused)")
        return
    assert not refused, what + " was not refused"
    shadow.seek(off)
    shadow.write(bytes(n))
    check(what)


def trim(off, n):
    h.trim(n, off)
    shadow.seek(off)
    shadow.write(bytes(n))
    check("trim %d+%d" % (off, n))


check("nothing")
# Block 1 PARTIALLY_PRESENT; block 0, all parent (NOT_PRESENT), would
# become ZERO, but block 1 needs zeros written over the parent.
write(MB + 256 * 1024, 4096, 0x11)
zero(0, MB + 4096, True, refused=True)
# Block 2 FULLY_PRESENT (ZERO, then written); part of it could be zeroed
# in place, but block 3 (NOT_PRESENT) shows the parent.
trim(2 * MB, MB)
write(2 * MB + 128 * 1024, 64 * 1024, 0x22)
zero(2 * MB + 64 * 1024, MB, True, refused=True)
# The same with a PARTIALLY_PRESENT block first: refused at once.
zero(MB + 128 * 1024, MB, True, refused=True)
# Cheap ones are done: part of a FULLY_PRESENT block.
zero(2 * MB + 160 * 1024, 8 * 1024, True)
# Without FAST_ZERO zeros are written over the parent.
zero(MB + 255 * 1024, 4096, False)
zero(3 * MB + 1024, 4608, False)
h.flush()
h.shutdown()
PY
    fail "requests on the child"
ds_stop "$DS_PID" || fail "diskserve exited with an error"

judge child "$child" "$child.shadow" "$base"
ds_start ro -r -f vhdx "$child"
qemu-img convert -q -f raw -O raw "$DS_URI" "$T/child.ro" ||
    fail "reading the read-only export"
ds_stop "$DS_PID" || fail "read-only server exit status $?"
cmp "$T/child.ro" "$child.shadow" || fail "read-only export differs"
[ "$(sha256sum <"$base")" = "$sum" ] || fail "the parent changed"
echo "ok: refused fast zeros changed nothing"
