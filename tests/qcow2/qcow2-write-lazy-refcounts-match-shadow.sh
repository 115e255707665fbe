#!/bin/sh
# Claim: an image with lazy_refcounts=on is written with the dirty bit
# set while refcounts lag, and is clean again (dirty bit cleared, no
# error, no leak) once the server stops; killed with writes in memory, it
# is dirty, and the next read-write open repairs its refcounts and serves
# every flushed write.  SEED=N replays.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"
POKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"

dirty_bit()
{
    echo $(( $($POKE get "$1" 72 '>Q') & 1 ))
}

img="$T/lazy.qcow2"
qemu-img create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4k "$img" 16M
write_and_judge lazy "$img"
[ "$(dirty_bit "$img")" = 0 ] || fail "lazy: dirty bit left set"

# Kill the server after flushed writes: the dirty bit stays, and the
# refcounts on disk lag behind the L2 tables.
img="$T/killed.qcow2"
qemu-img create -q -f qcow2 -o lazy_refcounts=on "$img" 64M
ds_start killed "$img"
qemu-io -f raw -c "write -P 0x31 0 1M" -c "write -P 0x32 8M 3M" -c flush \
    -c "write -P 0x33 20M 64k" -c flush "$DS_URI" >/dev/null
[ "$(dirty_bit "$img")" = 1 ] || fail "killed: dirty bit not set while open"
kill -9 "$DS_PID"
wait "$DS_PID" 2>/dev/null || true
rc=0
qemu-img check "$img" >/dev/null 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "killed: lazy refcounts on disk were up to date"

ds_start repaired "$img"
grep -q "repaired" "$T/repaired.log" || fail "killed: no repair logged"
qemu-io -f raw -c "read -P 0x31 0 1M" -c "read -P 0x32 8M 3M" \
    -c "read -P 0x33 20M 64k" -c "write -P 0x34 30M 64k" "$DS_URI" \
    >/dev/null || fail "killed: flushed writes lost"
ds_stop "$DS_PID" || fail "repaired: diskserve exited with an error"
qemu-img check -q "$img" || fail "repaired: qemu-img check"
[ "$(dirty_bit "$img")" = 0 ] || fail "repaired: dirty bit left set"
qemu-io -f qcow2 -c "read -P 0x32 8M 3M" -c "read -P 0x34 30M 64k" "$img" \
    >/dev/null || fail "repaired: qemu reads other data"
echo "ok: killed, repaired"
