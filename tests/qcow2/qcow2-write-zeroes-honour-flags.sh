#!/bin/sh
# Claim: write_zeroes follows its flags.  On version 3, whole clusters
# get the zero flag without any data written: with NO_HOLE the host
# cluster stays allocated, without it (MAY_TRIM) it is freed; FAST_ZERO
# succeeds there, and fails with ENOTSUP, changing nothing, where a part
# of a cluster holding data would need zeros written.  On version 2,
# which has no zero flag, FAST_ZERO succeeds only where clusters can be
# deallocated (MAY_TRIM, no backing file), and ENOTSUP answers it
# wherever zeros would have to be written.  qemu-img check stays clean.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"
POKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"

# entry IMAGE GUEST: "HOST ZERO" of the L2 entry mapping GUEST: its host
# cluster offset (0: none) and its zero flag.
entry()
{
    $POKE l2 "$1" "$2" | /usr/bin/python3 -c '
import sys
v = int(sys.stdin.read().split()[1], 0)
print(v & 0x00fffffffffffe00, v & 1)'
}

# run_zeroes URI "OFFSET LENGTH FLAGS EXPECT"...: zero each range with
# FLAGS (noh = NO_HOLE, fast = FAST_ZERO, - = none) and expect ok or
# ENOTSUP; a range that took reads zeros, a refused one what it held.
run_zeroes()
{
    /usr/bin/python3 -c '
import errno, sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.can_fast_zero(), "FAST_ZERO not advertised"
bad = 0
for line in sys.argv[2:]:
    off, n, flags, expect = line.split()
    off, n = int(off, 0), int(n, 0)
    f = 0
    if "noh" in flags:
        f |= nbd.CMD_FLAG_NO_HOLE
    if "fast" in flags:
        f |= nbd.CMD_FLAG_FAST_ZERO
    before = h.pread(n, off)
    try:
        h.zero(n, off, flags=f)
        got = "ok"
    except nbd.Error as e:
        got = errno.errorcode.get(e.errnum, str(e.errnum))
    after = h.pread(n, off)
    if got != expect:
        print("FAIL: zero %s: %s, want %s" % (line, got, expect))
        bad = 1
    elif got == "ok" and after != bytes(n):
        print("FAIL: zero %s: does not read zeros" % line)
        bad = 1
    elif got != "ok" and after != before:
        print("FAIL: zero %s: refused but changed the data" % line)
        bad = 1
h.shutdown()
sys.exit(bad)
' "$@"
}

# Version 3.
img="$T/v3.qcow2"
qemu-img create -q -f qcow2 "$img" 8M
qemu-io -f qcow2 -c "write -P 0x5a 0 1M" "$img" >/dev/null
host=$(entry "$img" 0x10000 | cut -d' ' -f1)
ds_start v3 "$img"
run_zeroes "$DS_URI" \
    "0 0x10000 noh ok" \
    "0x10000 0x10000 noh,fast ok" \
    "0x20000 0x20000 - ok" \
    "0x40000 0x10000 fast ok" \
    "0x60000 5000 fast ENOTSUP" \
    "0x70123 0x20000 noh,fast ENOTSUP" \
    "0x200000 3000 fast ok" \
    "0x80200 4096 - ok" ||
    fail "v3: zero writes"
ds_stop "$DS_PID"
qemu-img check -q "$img" || fail "v3: qemu-img check"
# NO_HOLE: zero flag, same host cluster; MAY_TRIM: zero flag alone.
[ "$(entry "$img" 0x10000)" = "$host 1" ] ||
    fail "v3: NO_HOLE zero entry $(entry "$img" 0x10000) (host was $host)"
[ "$(entry "$img" 0x20000)" = "0 1" ] ||
    fail "v3: MAY_TRIM entry $(entry "$img" 0x20000)"
[ "$(entry "$img" 0x40000)" = "0 1" ] ||
    fail "v3: FAST_ZERO entry $(entry "$img" 0x40000)"
echo "ok: version 3"

# Version 2, without and with a backing file.
img="$T/v2.qcow2"
qemu-img create -q -f qcow2 -o compat=0.10 "$img" 8M
qemu-io -f qcow2 -c "write -P 0x5a 0 1M" "$img" >/dev/null
ds_start v2 "$img"
run_zeroes "$DS_URI" \
    "0 0x20000 fast ok" \
    "0x20000 0x10000 noh,fast ENOTSUP" \
    "0x30000 0x10000 noh ok" \
    "0x40000 5000 fast ENOTSUP" \
    "0x300000 0x10000 noh,fast ok" \
    "0x50000 0x10000 - ok" ||
    fail "v2: zero writes"
ds_stop "$DS_PID"
qemu-img check -q "$img" || fail "v2: qemu-img check"
[ "$(entry "$img" 0)" = "0 0" ] || fail "v2: MAY_TRIM left $(entry "$img" 0)"
[ "$(entry "$img" 0x30000 | cut -d' ' -f1)" != 0 ] ||
    fail "v2: NO_HOLE deallocated"

back="$T/back.qcow2"
qemu-img create -q -f qcow2 "$back" 8M
qemu-io -f qcow2 -c "write -P 0x42 0 8M" "$back" >/dev/null
img="$T/v2b.qcow2"
qemu-img create -q -f qcow2 -o compat=0.10 -b "$back" -F qcow2 "$img" 8M
ds_start v2b "$img"
run_zeroes "$DS_URI" \
    "0 0x10000 fast ENOTSUP" \
    "0x10000 0x10000 - ok" \
    "0x20000 0x1000 noh ok" ||
    fail "v2 over a backing file: zero writes"
ds_stop "$DS_PID"
qemu-img check -q "$img" || fail "v2b: qemu-img check"
echo "ok: version 2"
