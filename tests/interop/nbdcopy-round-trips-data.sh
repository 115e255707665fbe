#!/bin/sh
# Claim: nbdcopy copies a file into a diskserve export and back out
# unchanged (same bytes, same checksum), with one connection and with
# the several connections it opens when the server offers multi-conn,
# over a Unix socket and TCP; and it copies from one export of a
# --config server to another.  The source has data, holes and runs of
# written zeros, so nbdcopy's zeroing and sparse paths are exercised.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/interop/interop-functions.sh"
require nbdcopy nbdinfo cmp sha256sum
test_seed

size=$((64 * 1024 * 1024))
src="$T/src.img"
truncate -s $size "$src"
write_data "$src" "$SEED" 0:1048576 4194304:65536 5242880:3145728 \
    20000000:123457 33554432:16777216 67043328:65536
# Written zeros inside a data run, distinct from holes.
dd if=/dev/zero of="$src" bs=64K seek=100 count=4 conv=notrunc status=none
sum=$(sha256sum <"$src")

# copy_through URI IMAGE [nbdcopy options]: into the export, back out.
copy_through()
{
    uri=$1 image=$2
    shift 2
    truncate -s 0 "$image"
    truncate -s $size "$image"
    nbdcopy "$@" -- "$src" "$uri" || fail "$uri: nbdcopy in ($*) failed"
    cmp "$src" "$image" || fail "$uri: image differs after copying in ($*)"
    rm -f "$T/out.img"
    truncate -s $size "$T/out.img"
    nbdcopy "$@" -- "$uri" "$T/out.img" ||
        fail "$uri: nbdcopy out ($*) failed"
    cmp "$src" "$T/out.img" || fail "$uri: copy out ($*) differs"
    [ "$(sha256sum <"$T/out.img")" = "$sum" ] || fail "$uri: checksum"
}

dst="$T/dst.img"
truncate -s $size "$dst"
ds_start unix -f raw "$dst"
copy_through "$DS_URI" "$dst" --connections=1
copy_through "$DS_URI" "$dst"
copy_through "$DS_URI" "$dst" --connections=4 --requests=64 --flush
ds_stop "$DS_PID" || fail "diskserve exited with $? on SIGTERM"

ds_start_tcp tcp -f raw "$dst"
copy_through "$DS_TCP_URI" "$dst"
ds_stop "$DS_PID" || fail "diskserve exited with $? on SIGTERM"

# Export to export, inside one server.
truncate -s $size "$T/b.img"
cat >"$T/exports.ini" <<INI
[export a]
image=$src
format=raw
read-only=true

[export b]
image=$T/b.img
format=raw
INI
ds_start config --config "$T/exports.ini"
nbdcopy "nbd+unix:///a?socket=$DS_SOCK" "nbd+unix:///b?socket=$DS_SOCK" ||
    fail "nbdcopy from export a to export b failed"
ds_stop "$DS_PID" || fail "diskserve exited with $? on SIGTERM"
cmp "$src" "$T/b.img" || fail "export b differs from export a"
echo PASS
