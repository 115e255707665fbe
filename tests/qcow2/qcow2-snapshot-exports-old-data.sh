#!/bin/sh
# Claim: diskserve -l NAME and -l ID export an internal snapshot's data
# as it was when the snapshot was taken (qemu-img snapshot -c), not the
# data written afterwards, exactly as qemu-nbd -l does, at the size the
# snapshot was taken at; an unknown snapshot is refused at start with a
# message naming it.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"

img="$T/snap.qcow2"
qemu-img create -q -f qcow2 "$img" 8M
qio "$img" "write -s $(stamp 1 0 3M) 0 3M" "write -z 5M 64k"
qemu-img snapshot -c first "$img"
qio "$img" "write -s $(stamp 2 1M 3M) 1M 3M" "discard 0 64k"
qemu-img snapshot -c second "$img"
qio "$img" "write -s $(stamp 3 2M 1M) 2M 1M" "write -z 7M 64k"

# The active layer still reads the newest data.
check_export active "$img"

# Each snapshot, by name and by ID, reads as qemu reads it.
for sn in first second 1 2; do
    DS_OPTS="-l $sn"
    QNBD_OPTS="-l $sn"
    CONVERT_OPTS="-l $sn"
    CHECK_OPTS="-s $sn"
    check_export "snap-$sn" "$img"
done

# The first snapshot really is the old data: its bytes at 1 MiB are the
# first stamp, which the active layer overwrote.
qemu-img convert -f qcow2 -l first -O raw "$img" "$T/first.raw"
qemu-img convert -f qcow2 -O raw "$img" "$T/now.raw"
cmp -s "$T/first.raw" "$T/now.raw" && fail "snapshot equals active data"

if "$DISKSERVE" -r -l nosuch -k "$T/x.sock" "$img" 2>"$T/err"; then
    fail "unknown snapshot accepted"
fi
grep -q "no snapshot with ID or name 'nosuch'" "$T/err" ||
    fail "unclear message: $(cat "$T/err")"

# After the image grows, a snapshot still has the size it was taken at
# (its disk size field), and its data; qemu-nbd -l would show the new
# size with zeros past the old end.
qemu-img create -q -f qcow2 "$T/grow.qcow2" 4M
qio "$T/grow.qcow2" "write -s $(stamp 4 0 4M) 0 4M"
qemu-img snapshot -c small "$T/grow.qcow2"
qemu-img resize -q "$T/grow.qcow2" 8M
qio "$T/grow.qcow2" "write -s $(stamp 5 2M 6M) 2M 6M"
qemu-img convert -f qcow2 -l small -O raw "$T/grow.qcow2" "$T/small.raw"
truncate -s 4M "$T/small.raw"
ds_start grow -r -l small "$T/grow.qcow2"
[ "$(nbdinfo --size "$DS_URI")" = 4194304 ] || fail "snapshot size"
qemu-img compare -f raw -F raw "$T/small.raw" "$DS_URI" >/dev/null ||
    fail "grown image's snapshot reads wrong"
ds_stop "$DS_PID"
