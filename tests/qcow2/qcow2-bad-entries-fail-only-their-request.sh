#!/bin/sh
# Claim: a bad L2 entry or compressed descriptor found while serving
# (compressed data past the end of the file or not inflating to a
# cluster, a data cluster past the end or unaligned, an L2 table past
# the end, an extended L2 bitmap with a subcluster both allocated and
# zero) fails each request that reaches it with EIO and one log line;
# other requests on the same connection and the server go on.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"
POKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"

# expect NAME URI OFFSET LENGTH RESULT: one NBD read gives RESULT.
expect()
{
    local got
    got=$($POKE read "$2" "$3" "$4")
    [ "$got" = "$5" ] || fail "$1: read $4 at $3 gave $got, expected $5"
}

# entry IMAGE GUEST: print "FILE_OFFSET VALUE" of the L2 entry.
entry()
{
    $POKE l2 "$1" "$2"
}

# serve NAME IMAGE GOOD_OFF BAD_OFF MESSAGE: the bad cluster fails with
# EIO (twice: nothing is cached wrongly), the good one reads, and the
# log has MESSAGE.
serve()
{
    local name=$1 img=$2 good=$3 badoff=$4 msg=$5
    ds_start "$name" -r "$img"
    expect "$name" "$DS_URI" "$badoff" 4096 EIO
    expect "$name" "$DS_URI" "$good" 4096 OK
    expect "$name" "$DS_URI" "$badoff" 512 EIO
    expect "$name" "$DS_URI" "$((badoff + 65536 * 3))" 4096 OK
    kill -0 "$DS_PID" || fail "$name: server died"
    ds_stop "$DS_PID" || fail "$name: server exit status"
    # One line per failed request: two.
    local lines
    lines=$(grep -F "$msg" "$T/$name.log" | grep -cF "$img" || true)
    [ "$lines" = 2 ] || {
        cat "$T/$name.log" >&2
        fail "$name: $lines log lines with '$msg', expected 2"
    }
    echo "ok: $name: $(grep -F "$msg" "$T/$name.log" | head -1)"
}

src="$T/src.qcow2"
qemu-img create -q -f qcow2 "$src" 4M
qio "$src" "write -s $(stamp 1 0 4M) 0 4M"

# Compressed descriptor pointing 4 GiB past the end of the file.
img="$T/cdesc.qcow2"
qemu-img convert -q -c -f qcow2 -O qcow2 "$src" "$img"
set -- $(entry "$img" 65536)
$POKE set "$img" "$1" '>Q' $(((1 << 62) | (1 << 32)))
serve cdesc "$img" 0 65536 "compressed data past end of file"

# Compressed data overwritten with garbage: does not inflate.
img="$T/cdata.qcow2"
qemu-img convert -q -c -f qcow2 -O qcow2 "$src" "$img"
set -- $(entry "$img" 131072)
coff=$(($2 & ((1 << 54) - 1)))
printf '\377\377\377\377\377\377\377\377' |
    dd of="$img" bs=1 seek="$coff" conv=notrunc status=none
serve cdata "$img" 0 131072 "does not decompress to a cluster"

# Plain data cluster past the end of the file.
img="$T/host-eof.qcow2"
cp "$src" "$img"
set -- $(entry "$img" 1048576)
$POKE set "$img" "$1" '>Q' $(((1 << 63) | 0x40000000))
serve host-eof "$img" 0 1048576 "host cluster past end of file"

# Plain data cluster at an unaligned offset.
img="$T/host-unaligned.qcow2"
cp "$src" "$img"
set -- $(entry "$img" 2097152)
$POKE set "$img" "$1" '>Q' $(((1 << 63) | 0x50200))
serve host-unaligned "$img" 0 2097152 "host cluster offset unaligned"

# Extended L2: subcluster 0 both allocated and zero.
img="$T/bitmap.qcow2"
qemu-img create -q -f qcow2 -o extended_l2=on "$img" 4M
qio "$img" "write -s $(stamp 2 0 4M) 0 4M"
set -- $(entry "$img" 196608)
$POKE set "$img" "$(($1 + 8))" '>Q' 0x1ffffffff
serve bitmap "$img" 0 196608 "subcluster both allocated and zero"

# L2 table past the end of the file: everything it maps fails, the
# next L1 entry's range still reads.
img="$T/l2-eof.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 8M
qio "$img" "write -s $(stamp 3 0 8M) 0 8M"
l1=$($POKE get "$img" 40 '>Q')
$POKE set "$img" "$l1" '>Q' $(((1 << 63) | 0x40000000))
ds_start l2-eof -r "$img"
expect l2-eof "$DS_URI" 0 4096 EIO
expect l2-eof "$DS_URI" 2097152 4096 OK
ds_stop "$DS_PID"
grep -q "L1 entry 0: L2 table 0x40000000 past end of file" "$T/l2-eof.log" ||
    fail "l2-eof: $(cat "$T/l2-eof.log")"
echo "ok: l2-eof"
