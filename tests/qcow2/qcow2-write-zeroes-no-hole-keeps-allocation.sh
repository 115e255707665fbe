#!/bin/sh
# Claim: write_zeroes with NO_HOLE over part of an allocated cluster
# zeroes it in place without freeing any of the image file's space (on
# a file system that can, with FALLOC_FL_ZERO_RANGE; else with written
# zeros), while the same request without NO_HOLE punches a hole there.
# Both read back as zeros, the bytes around them are untouched, and
# qemu-img check stays clean.  Space is measured as the file's st_blocks
# around each request: SEEK_HOLE cannot tell, as ext4 and xfs report
# the unwritten extents of a zeroed range as a hole.
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img qemu-io fallocate /usr/bin/python3

echo "scratch directory on $(stat -f -c %T "$T")"
img="$T/disk.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=64k "$img" 4M
qemu-io -f qcow2 -c "write -P 0x5a 0 1M" "$img" >/dev/null
qemu-img convert -f qcow2 -O raw "$img" "$T/shadow"

# Without holes in the file system the difference cannot show: say so
# rather than pass without having looked.
dd if=/dev/zero of="$T/punch" bs=64k count=1 status=none
if ! fallocate -p -o 4096 -l 57344 "$T/punch" 2>/dev/null ||
   [ $(($(stat -c '%b * %B' "$T/punch"))) -ge 65536 ]; then
    fail "$(stat -f -c %T "$T") cannot punch holes: run on ext4 or xfs"
fi

# entries IMAGE: the L2 entries of guest clusters 1 to 6, which the
# requests below change parts of.
POKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"
entries()
{
    for c in 1 2 3 4 5 6; do
        $POKE l2 "$1" $((c * 65536))
    done
}
entries "$img" >"$T/l2.before"

ds_start zero "$img"
# Each case: guest offset, length, flags (noh = NO_HOLE, fua = FUA, -),
# and whether the file may lose space (keep: no; punch: it must).
/usr/bin/python3 - "$DS_URI" "$img" "$T/shadow" \
    "0x11000 0xe000 noh keep" \
    "0x21000 0xe000 - punch" \
    "0x303e8 0xc350 noh,fua keep" \
    "0x48000 0x10000 noh keep" \
    "0x58000 0x10000 - punch" <<'EOF' || fail "write_zeroes requests"
import os
import sys
import nbd

uri, img, shadow = sys.argv[1:4]
h = nbd.NBD()
h.connect_uri(uri)
bad = 0
with open(shadow, "r+b") as sh:
    for case in sys.argv[4:]:
        off, n, flags, want = case.split()
        off, n = int(off, 0), int(n, 0)
        f = 0
        if "noh" in flags:
            f |= nbd.CMD_FLAG_NO_HOLE
        if "fua" in flags:
            f |= nbd.CMD_FLAG_FUA
        before = os.stat(img).st_blocks
        h.zero(n, off, f)
        after = os.stat(img).st_blocks
        sh.seek(off)
        sh.write(bytes(n))
        grown = (after - before) * 512
        print("zero %s: the file's space changed by %+d bytes" %
              (case, grown))
        if want == "keep" and grown < 0:
            print("FAIL: zero %s freed %d bytes of the file" %
                  (case, -grown))
            bad = 1
        # A hole of at least the range less a 4 KiB block at each end.
        if want == "punch" and -grown < n - 8192:
            print("FAIL: zero %s freed only %d bytes" % (case, -grown))
            bad = 1
        if h.pread(n, off) != bytes(n):
            print("FAIL: zero %s does not read zeros" % case)
            bad = 1
    h.flush()
    sh.seek(0)
    if h.pread(1 << 20, 0) != sh.read(1 << 20):
        print("FAIL: the first MiB reads other than zeroed 0x5a bytes")
        bad = 1
h.shutdown()
sys.exit(bad)
EOF
ds_stop "$DS_PID" || fail "diskserve exited with an error"

qemu-img check -q -f qcow2 "$img" || fail "qemu-img check"
qemu-img compare -q -f qcow2 -F raw "$img" "$T/shadow" ||
    fail "qemu reads other data than the zeroed shadow"
# Zeroing parts of clusters changes no L2 entry: each guest cluster
# keeps its host cluster, and none gets the zero flag.
entries "$img" >"$T/l2.after"
cmp -s "$T/l2.before" "$T/l2.after" || {
    diff "$T/l2.before" "$T/l2.after" >&2
    fail "L2 entries changed"
}
echo "ok"
