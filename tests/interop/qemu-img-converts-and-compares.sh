#!/bin/sh
# Claim: qemu's block layer, as an NBD client of diskserve over an
# nbd+unix URI (and nbd:// on TCP), sees the export as the file it serves:
# qemu-img convert writes a raw file into the export byte for byte,
# qemu-img compare finds them identical and then finds a one-sector
# change at its exact offset, qemu-img map over NBD matches qemu-img map
# of the file itself, qemu-img info reports the size, and a qcow2 image
# converted out of the export passes qemu-img check and compares equal.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/interop/interop-functions.sh"
require qemu-img qemu-io
test_seed

size=$((32 * 1024 * 1024))
src="$T/src.img"
truncate -s $size "$src"
write_data "$src" "$SEED" 0:65536 1048576:1048576 8392704:4096 \
    16777216:4194304 33488896:65536

dst="$T/dst.img"
truncate -s $size "$dst"
ds_start unix -f raw "$dst"
uri="$DS_URI"

qemu-img convert -n -f raw -O raw "$src" "$uri" ||
    fail "qemu-img convert into the export failed"
cmp "$src" "$dst" || fail "the served file differs from the source"

out=$(qemu-img compare -f raw -F raw "$src" "$uri") ||
    fail "qemu-img compare: $out"
[ "$out" = "Images are identical." ] || fail "qemu-img compare said: $out"

qemu-img info -f raw "$uri" >"$T/info" || fail "qemu-img info failed"
grep -qF 'virtual size: 32 MiB (33554432 bytes)' "$T/info" || {
    cat "$T/info" >&2
    fail "qemu-img info shows the wrong size"
}

# Block status through NBD against qemu's own look at the same file.
qemu-img map --output=json -f raw "$dst" >"$T/map.file" ||
    fail "qemu-img map of the file failed"
qemu-img map --output=json -f raw "$uri" >"$T/map.nbd" ||
    fail "qemu-img map over NBD failed"
diff -u "$T/map.file" "$T/map.nbd" || fail "qemu-img map differs over NBD"

# One sector changed through NBD: compare names its offset.
qemu-io -f raw -c 'write -P 0x5a 2101248 512' "$uri" >"$T/io" 2>&1 ||
    fail "qemu-io write failed: $(cat "$T/io")"
rc=0
out=$(qemu-img compare -f raw -F raw "$src" "$uri") || rc=$?
[ "$rc" = 1 ] || fail "qemu-img compare after a change exited $rc: $out"
[ "$out" = "Content mismatch at offset 2101248!" ] ||
    fail "qemu-img compare said: $out"

# Out of the export into qcow2.
qemu-img convert -f raw -O qcow2 "$uri" "$T/out.qcow2" ||
    fail "qemu-img convert out of the export failed"
qemu-img check "$T/out.qcow2" >"$T/check" 2>&1 || {
    cat "$T/check" >&2
    fail "qemu-img check of the converted image failed"
}
qemu-img compare -f raw -F qcow2 "$dst" "$T/out.qcow2" >/dev/null ||
    fail "the qcow2 copy differs from the export"
ds_stop "$DS_PID" || fail "diskserve exited with $? on SIGTERM"

# The same over TCP.
cp "$src" "$dst"
ds_start_tcp tcp -f raw -r "$dst"
out=$(qemu-img compare -f raw -F raw "$src" "$DS_TCP_URI") ||
    fail "qemu-img compare over TCP: $out"
qemu-img convert -f raw -O raw "$DS_TCP_URI" "$T/tcp-out.img" ||
    fail "qemu-img convert over TCP failed"
cmp "$src" "$T/tcp-out.img" || fail "copy over TCP differs"
ds_stop "$DS_PID" || fail "diskserve exited with $? on SIGTERM"
echo PASS
