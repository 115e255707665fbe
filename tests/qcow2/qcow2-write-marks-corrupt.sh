#!/bin/sh
# Claim: a write whose L2 entry points into metadata (the L1 table, the
# refcount table, a refcount block, an L2 table) or is invalid (unaligned
# or past the end of the file) fails
# with EIO, leaves the metadata untouched, and marks the image corrupt:
# the corrupt bit is set in the file, later writes fail, reads of sound
# clusters go on, and the image is refused for writing afterwards.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"
POKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"

# try URI OFFSET LENGTH: "ok" or the errno name of a write there.
try_write()
{
    /usr/bin/python3 -c '
import errno, sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"\x77" * int(sys.argv[3]), int(sys.argv[2]))
    print("ok")
except nbd.Error as e:
    print(errno.errorcode.get(e.errnum, e.errnum))
' "$@"
}

good="$T/good.qcow2"
qemu-img create -q -f qcow2 "$good" 8M
qemu-io -f qcow2 -c "write -P 0x5a 0 1M" "$good" >/dev/null
l1=$($POKE get "$good" 40 '>Q')
rt=$($POKE get "$good" 48 '>Q')
l2=$(($($POKE get "$good" "$l1" '>Q') & 0xfffffffffe00))
rb=$($POKE get "$good" "$rt" '>Q')
copied=$((1 << 63))

for target in "L1 table:$l1" "refcount table:$rt" "refcount block:$rb" \
              "L2 table:$l2" "unaligned offset:$((0x50200))" \
              "offset past the end:$((0x40000000))"; do
    what=${target%:*} host=${target#*:}
    name=$(echo "$what" | tr ' ' -)
    img="$T/$name.qcow2"
    cp "$good" "$img"
    where=$($POKE l2 "$img" 0x20000 | cut -d' ' -f1)
    $POKE set "$img" "$where" '>Q' $((copied | host))
    before=$(od -An -tx1 -j "$l1" -N 64 "$img")
    ds_start "$name" "$img"
    got=$(try_write "$DS_URI" $((0x20000 + 512)) 4096)
    [ "$got" = EIO ] || fail "$what: write got $got, want EIO"
    grep -q "marked corrupt" "$T/$name.log" ||
        fail "$what: not marked corrupt: $(cat "$T/$name.log")"
    got=$(try_write "$DS_URI" $((0x300000)) 4096)
    [ "$got" = EIO ] || fail "$what: a later write got $got"
    qemu-io -f raw -c "read -P 0x5a 0 128k" "$DS_URI" >/dev/null ||
        fail "$what: sound clusters no longer read"
    ds_stop "$DS_PID" || true
    [ "$(od -An -tx1 -j "$l1" -N 64 "$img")" = "$before" ] ||
        fail "$what: the L1 table changed"
    [ $(($($POKE get "$img" 72 '>Q') & 2)) = 2 ] ||
        fail "$what: corrupt bit not set in the file"
    if "$DISKSERVE" -k "$T/never.sock" "$img" >"$T/out" 2>&1; then
        fail "$what: opened for writing again"
    fi
    grep -q "marked corrupt" "$T/out" || fail "$what: $(cat "$T/out")"
    echo "ok: an L2 entry pointing at the $what"
done
