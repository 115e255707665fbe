#!/bin/sh
# A malformed bitmap directory or table (bad sizes, offsets unaligned or
# past the end of the file, reserved bits, names empty, too long or used
# twice, overlapping tables) is reported in one line naming the file and
# the field: a read-only open drops the bitmaps and still opens, a
# read-write open (and diskserve-img bitmap) refuses and leaves the file
# as it was.  Never a crash (run it under check-sanitizers too).
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps/bitmaps-functions.sh"

base="$T/base.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=4k "$base" 64M
qemu-img bitmap --add -g 512 "$base" b512
qemu-io -c 'write 0 64k' -c 'write 20M 1M' "$base" >/dev/null
qemu-img bitmap --add -g 64k "$base" b64k
qemu-io -c 'write 40M 8k' "$base" >/dev/null
qemu-img bitmap --add -g 1M --disable "$base" b1m
$BMPOKE show "$base" >"$T/show"
t0=$(awk '$1 == 0 { print $3 }' "$T/show")
t1=$(awk '$1 == 1 { print $3 }' "$T/show")
[ "$(awk '$1 == 0 { print $4 }' "$T/show")" = 4 ] ||
    fail "b512 should have a 4-entry table"
d0=$(/usr/bin/python3 -c "
import struct, sys
f = open(sys.argv[1], 'rb'); f.seek($t0); print(struct.unpack('>Q', f.read(8))[0])
" "$base")
[ "$d0" != 0 ] || fail "b512's first data cluster should be allocated"
l1=$(/usr/bin/python3 -c "
import struct, sys
f = open(sys.argv[1], 'rb'); f.seek(40); print(struct.unpack('>Q', f.read(8))[0])
" "$base")

n=0
# case WHAT EXPECT POKE...: poke a copy of base, then check both opens.
case_()
{
    local what=$1 expect=$2
    shift 2
    n=$((n + 1))
    local f="$T/bad$n.qcow2"
    cp "$base" "$f"
    local cmd=$1
    shift
    $BMPOKE "$cmd" "$f" "$@" || fail "$what: poke failed"
    cp "$f" "$T/before.qcow2"

    local rc=0
    "$PROBE" "$f" list >"$T/ro.out" 2>"$T/ro.err" || rc=$?
    [ "$rc" = 0 ] ||
        { cat "$T/ro.err" >&2; fail "$what: read-only open failed"; }
    [ ! -s "$T/ro.out" ] || fail "$what: read-only open still lists bitmaps"
    [ "$(wc -l <"$T/ro.err")" = 1 ] ||
        { cat "$T/ro.err" >&2; fail "$what: read-only: not one line"; }
    grep -q "$f: .*$expect.*ignoring every bitmap" "$T/ro.err" ||
        { cat "$T/ro.err" >&2; fail "$what: read-only: expected '$expect'"; }

    rc=0
    "$PROBE" -w "$f" list >"$T/rw.out" 2>"$T/rw.err" || rc=$?
    [ "$rc" = 1 ] || fail "$what: read-write open exit $rc, expected 1"
    grep -q "$f: .*$expect.*refusing" "$T/rw.err" ||
        { cat "$T/rw.err" >&2; fail "$what: read-write: expected '$expect'"; }
    [ "$(grep -c qcow2 "$T/rw.err")" = 1 ] ||
        { cat "$T/rw.err" >&2; fail "$what: read-write: not one line"; }

    rc=0
    "$DISKSERVE_IMG" bitmap --clear "$f" b64k 2>"$T/img.err" || rc=$?
    [ "$rc" = 1 ] || fail "$what: diskserve-img bitmap exit $rc, expected 1"
    cmp -s "$f" "$T/before.qcow2" ||
        fail "$what: a refused open changed the file"
    rm -f "$f"
}

case_ "nb_bitmaps 0" "nb_bitmaps 0 out of range" ext nb_bitmaps 0
case_ "nb_bitmaps too many" "nb_bitmaps 70000 out of range" ext nb_bitmaps 70000
case_ "nb_bitmaps more than entries" "directory ends inside entry 3" \
    ext nb_bitmaps 4
case_ "nb_bitmaps fewer than entries" "take 64 bytes" ext nb_bitmaps 2
case_ "reserved field" "reserved field 0x1 not zero" ext reserved 1
case_ "directory size too small" "bitmap_directory_size 8 out of range" \
    ext dir_size 8
case_ "directory size too large" "bitmap_directory_size 99999999 out of range" \
    ext dir_size 99999999
case_ "directory size short of the entries" "entry 2 (.*) runs past the end of the directory" ext dir_size 88
case_ "directory unaligned" "bitmap_directory_offset 0x.*not cluster aligned" \
    ext dir_offset 0x10008
case_ "directory past the end" "past the end of the file" \
    ext dir_offset 0x100000000
case_ "table past the end" "bitmap 'b512': bitmap_table_offset 0x100000000 .*past the end" \
    entry 0 table_offset 0x100000000
case_ "table unaligned" "bitmap 'b512': bitmap_table_offset 0x.*not cluster aligned" \
    entry 0 table_offset $((t0 + 512))
case_ "table size 0" "bitmap 'b512': bitmap_table_size 0 out of range" \
    entry 0 table_size 0
case_ "table size wrong" "bitmap 'b512': bitmap_table_size 3 does not fit" \
    entry 0 table_size 3
case_ "table size huge" "bitmap 'b64k': bitmap_table_size 4294967295 out of range" \
    entry 1 table_size 0xffffffff
case_ "table too large for qemu" "bitmap 'b64k': bitmap_table_size 200000 holds more than" \
    entry 1 table_size 200000
case_ "reserved flags" "bitmap 'b64k': flags 0x12 have reserved bits" \
    entry 1 flags 0x12
case_ "type 2" "bitmap 'b64k': type 2 unknown" entry 1 type 2
case_ "granularity too fine" "bitmap 'b64k': granularity_bits 8 out of range" \
    entry 1 gran 8
case_ "granularity too coarse" "bitmap 'b64k': granularity_bits 32 out of range" \
    entry 1 gran 32
case_ "empty name" "entry 1: name_size 0 out of range" entry 1 name_size 0
case_ "name too long" "entry 2: name_size 1024 out of range" \
    entry 2 name_size 1024
case_ "entry past the directory" "entry 1 (.*) runs past the end of the directory" \
    entry 1 extra_size 100000
case_ "duplicate names" "bitmap 'b512': name used twice" name 1 b512
case_ "table entry unaligned" "bitmap 'b512': table entry 0 .*not cluster aligned" \
    table 0 0 $((d0 + 512))
case_ "table entry reserved bits" "bitmap 'b512': table entry 1 0x2: reserved bits" \
    table 0 1 2
case_ "table entry all ones with offset" "table entry 0 .*all-ones flag set with a data offset" \
    table 0 0 $((d0 | 1))
case_ "table entry past the end" "table entry 2: data offset 0x10000000000 past the end" \
    table 0 2 0x10000000000
case_ "data on the L1 table" "overlap the L1 table" table 0 3 "$l1"
case_ "overlapping tables" "cluster 0x.* also used by bitmap" \
    entry 1 table_offset "$t0"
case_ "shared data cluster" "cluster 0x.* also used by bitmap" \
    table 0 3 "$d0"
[ $n -ge 31 ] || fail "only $n cases ran"

# Without the autoclear bit the extension is stale: ignored, not an error.
f="$T/stale.qcow2"
cp "$base" "$f"
$BMPOKE autoclear "$f" 0
"$PROBE" -w "$f" list >"$T/out" 2>"$T/err" || fail "stale extension refused"
[ ! -s "$T/out" ] || fail "stale extension's bitmaps listed"
grep -q "without its autoclear bit" "$T/err" || fail "stale extension not noted"
