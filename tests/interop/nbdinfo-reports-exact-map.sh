#!/bin/sh
# Claim: nbdinfo sees exactly the export diskserve should present, over a
# Unix socket and TCP: its size, flags, contexts and block sizes; --list
# shows the name and description; --map prints exactly the data and hole
# runs of a sparse file made with truncate and dd at known offsets (and
# the same lines as against qemu-nbd serving the same file); the
# qemu:allocation-depth map calls the raw file local throughout.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/interop/interop-functions.sh"
require nbdinfo qemu-nbd dd truncate

img="$T/sparse.img"
truncate -s 8M "$img"
# Data at 0 (64K), 1M (128K), 3M (64K) and the last 64K; holes elsewhere.
head -c 4194304 /dev/urandom >"$T/random"
dd if="$T/random" of="$img" bs=64K count=1 conv=notrunc status=none
dd if="$T/random" of="$img" bs=64K seek=16 skip=1 count=2 conv=notrunc \
    status=none
dd if="$T/random" of="$img" bs=64K seek=48 skip=3 count=1 conv=notrunc \
    status=none
dd if="$T/random" of="$img" bs=64K seek=127 skip=4 count=1 conv=notrunc \
    status=none

cat >"$T/map.expected" <<'MAP'
         0       65536    0  data
     65536      983040    3  hole,zero
   1048576      131072    0  data
   1179648     1966080    3  hole,zero
   3145728       65536    0  data
   3211264     5111808    3  hole,zero
   8323072       65536    0  data
MAP
cat >"$T/depth.expected" <<'MAP'
         0     8388608    1  local
MAP
cat >"$T/totals.expected" <<'MAP'
    327680   3.9%   0 data
   8060928  96.1%   3 hole,zero
MAP

# check_export URI: every claim above against one URI.
check_export()
{
    uri=$1
    nbdinfo --map "$uri" >"$T/map" || fail "$uri: nbdinfo --map failed"
    diff -u "$T/map.expected" "$T/map" || fail "$uri: --map differs"
    nbdinfo --map=qemu:allocation-depth "$uri" >"$T/depth" ||
        fail "$uri: nbdinfo --map=qemu:allocation-depth failed"
    diff -u "$T/depth.expected" "$T/depth" ||
        fail "$uri: allocation depth map differs"
    nbdinfo --map --totals "$uri" >"$T/totals" ||
        fail "$uri: nbdinfo --map --totals failed"
    diff -u "$T/totals.expected" "$T/totals" || fail "$uri: totals differ"

    # Compared without the indentation nbdinfo puts before each field.
    nbdinfo "$uri" | sed 's/^[[:space:]]*//' >"$T/info" ||
        fail "$uri: nbdinfo failed"
    for line in \
        'protocol: newstyle-fixed without TLS, using structured packets' \
        'export="sparse":' \
        'export-size: 8388608 (8M)' \
        'description: a sparse test disk' \
        'base:allocation' \
        'qemu:allocation-depth' \
        'is_read_only: false' \
        'can_cache: true' \
        'can_df: true' \
        'can_fast_zero: true' \
        'can_flush: true' \
        'can_fua: true' \
        'can_multi_conn: true' \
        'can_trim: true' \
        'can_zero: true' \
        'block_size_minimum: 1' \
        'block_size_preferred: 4096' \
        'block_size_maximum: 33554432'
    do
        grep -qxF "$line" "$T/info" || {
            cat "$T/info" >&2
            fail "$uri: nbdinfo lacks the line '$line'"
        }
    done

    nbdinfo --size "$uri" >"$T/size"
    [ "$(cat "$T/size")" = 8388608 ] || fail "$uri: --size $(cat "$T/size")"
}

ds_start unix -f raw -x sparse -D "a sparse test disk" "$img"
check_export "nbd+unix:///sparse?socket=$DS_SOCK"

nbdinfo --list "nbd+unix:///?socket=$DS_SOCK" >"$T/list" ||
    fail "nbdinfo --list failed"
grep -qxF 'export="sparse":' "$T/list" || fail "--list lacks the export"
[ "$(grep -c '^export=' "$T/list")" = 1 ] || fail "--list shows other exports"
ds_stop "$DS_PID" || fail "diskserve exited with $? on SIGTERM"

ds_start_tcp tcp -f raw -x sparse -D "a sparse test disk" "$img"
check_export "nbd://127.0.0.1:$DS_PORT/sparse"
ds_stop "$DS_PID" || fail "diskserve exited with $? on SIGTERM"

# The same file through qemu-nbd prints the same map.
qemu_nbd_start qemu -f raw -r "$img"
nbdinfo --map "$QN_URI" >"$T/map.qemu" || fail "nbdinfo against qemu-nbd"
diff -u "$T/map.qemu" "$T/map.expected" ||
    fail "qemu-nbd's map differs from the expected one"

# A read-only export says so.
ds_start ro -f raw -r "$img"
nbdinfo "$DS_URI" | grep -qx '[[:space:]]*is_read_only: true' ||
    fail "-r export not shown read-only"
echo PASS
