#!/bin/sh
# Bitmaps qemu-img made (granularity 512 B, 64 KiB and 1 MiB, one of
# them disabled part of the time), with qemu-io writes between them so
# that they differ, read through our driver hold the same dirty runs as
# qemu-nbd exports, and list with their granularity and state.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps/bitmaps-functions.sh"

for cs in 64k 4k; do
    f="$T/a-$cs.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=$cs "$f" 67M
    qemu-img bitmap --add -g 512 "$f" b512
    qemu-io -c 'write 1000 3000' -c 'write 10M 70k' "$f" >/dev/null
    qemu-img bitmap --add -g 64k "$f" b64k
    qemu-io -c 'write 20M 1k' -c 'write 66M 1M' -c 'write -z 5M 300k' \
        "$f" >/dev/null
    qemu-img bitmap --add -g 1M --disable "$f" b1m
    qemu-io -c 'write 7M 4k' "$f" >/dev/null
    qemu-img bitmap --enable "$f" b1m
    qemu-io -c 'write 30M 1k' -c 'discard 10M 64k' "$f" >/dev/null
    qemu-img bitmap --disable "$f" b1m
    qemu-io -c 'write 40M 1k' "$f" >/dev/null

    maps_agree "$f" b512 b64k b1m

    "$PROBE" "$f" list >"$T/list" || fail "bitmap-probe list failed"
    cat >"$T/want" <<EOT
b512 512 1
b64k 65536 1
b1m 1048576 0
EOT
    awk '{ print $1, $2, $4 }' "$T/list" | diff -u "$T/want" - >&2 ||
        fail "bitmap list differs (name granularity recording)"
    # Persistent, consistent; the count is the dirty bytes.
    awk '$5 != 1 || $6 != 0 { exit 1 }' "$T/list" ||
        fail "bitmaps not listed persistent and consistent"
    c=$(awk '$1 == "b1m" { print $3 }' "$T/list")
    [ "$c" = $((2 * 1048576)) ] || fail "b1m count $c, expected 2 MiB"
done

# A large image with a 512-byte bitmap: sparse memory, same runs.
f="$T/big.qcow2"
qemu-img create -q -f qcow2 "$f" 1T
qemu-img bitmap --add -g 512 "$f" fine
qemu-io -c 'write 0 512' -c 'write 700G 64k' -c 'write 1023G 3k' \
    "$f" >/dev/null
maps_agree "$f" fine
