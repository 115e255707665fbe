#!/bin/sh
# Claim: the L1 table moves to a larger place in order (new table
# written and synced, then the header, then the old table freed): after
# growing twice and writing, qemu-img check finds no error and no leak,
# the header names the larger table, and qemu reads what the disk held,
# plus the new write.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"
POKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"

img="$T/l1.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512 "$img" 4M
qemu-io -f qcow2 -c "write -P 0x11 0 64k" -c "write -P 0x22 1M 200k" \
    -c "write -P 0x33 4000k 96k" "$img" >/dev/null
l1_before=$($POKE get "$img" 36 '>I')
"$abs_top_builddir/tests/qcow2/qcow2-write-grow-l1" "$img" \
    $((l1_before * 4)) $((l1_before * 9)) || fail "growing the L1 table"
qemu-img check -q "$img" || fail "qemu-img check"
l1_after=$($POKE get "$img" 36 '>I')
[ "$l1_after" -ge $((l1_before * 9)) ] ||
    fail "l1_size $l1_after, want at least $((l1_before * 9))"
qemu-io -f qcow2 -c "read -P 0x6c 0 512" -c "read -P 0x11 512 63k" \
    -c "read -P 0x22 1M 200k" -c "read -P 0x33 4000k 96k" \
    -c "read -P 0 64k 960k" "$img" >/dev/null || fail "contents"
echo "ok: L1 table grew from $l1_before to $l1_after entries"
