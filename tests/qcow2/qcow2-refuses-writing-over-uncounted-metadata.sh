#!/bin/sh
# Claim: an image whose header, L1 table, refcount table, L2 table or
# refcount block has refcount 0 is refused read-write with one line
# naming the file and the structure (the allocator would hand that
# cluster out again and overwrite it) and left byte for byte as it was
# (a failed open once truncated it to nothing), is still served
# read-only, and serves read-write again once `qemu-img check -r all`
# repaired it; a write then leaves it clean by qemu-img check.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"
require timeout
POKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"

good="$T/good.qcow2"
qemu-img create -q -f qcow2 "$good" 16M
qio "$good" "write -s $(stamp 1 0 1M) 0 1M"
# qemu-img's layout: reftable at 0x10000, its block at 0x20000, L1 at
# 0x30000 whose first entry is COPIED and 0x40000 (the one L2 table);
# 16-bit refcounts.
[ "$($POKE get "$good" 48 '>Q')" = $((0x10000)) ] &&
[ "$($POKE get "$good" $((0x10000)) '>Q')" = $((0x20000)) ] &&
[ "$($POKE get "$good" 40 '>Q')" = $((0x30000)) ] &&
[ "$($POKE get "$good" $((0x30000)) ">Q")" = 9223372036855037952 ] ||
    fail "unexpected qemu-img layout"

n=0
# uncounted NAME CLUSTER WHAT: zero the refcount of host cluster CLUSTER
# and expect a read-write start to fail naming WHAT, a read-only one to
# serve the data, and a repaired copy to take a write.
uncounted()
{
    local img="$T/$1.qcow2" c=$2 what=$3 rc=0
    cp "$good" "$img"
    $POKE set "$img" $((0x20000 + c * 2)) '>H' 0
    cp "$img" "$T/before"
    timeout 10 "$DISKSERVE" -k "$T/never.sock" "$img" >"$T/out" 2>&1 ||
        rc=$?
    [ $rc -eq 1 ] || { cat "$T/out" >&2; fail "$1: exit $rc, expected 1"; }
    grep -F "the $what at $(printf 0x%x $((c * 65536))) has refcount 0" \
        "$T/out" | grep -qF "$img" || {
        cat "$T/out" >&2
        fail "$1: no line naming the file and the $what"
    }
    cmp -s "$img" "$T/before" || fail "$1: the refused open changed the file"
    [ "$(grep -c . "$T/out")" -le 2 ] ||
        { cat "$T/out" >&2; fail "$1: more than the refusal was logged"; }

    ds_start ro -r "$img"
    qemu-img compare -f qcow2 -F raw "$good" "$DS_URI" >"$T/cmp" 2>&1 || { cat "$T/cmp" >&2;
        fail "$1: read-only export differs"; }
    ds_stop "$DS_PID"

    qemu-img check -q -r all "$img" >/dev/null 2>&1 || true
    ds_start rw "$img"
    qemu-io -f raw -c "write -P 0x5a 2M 64k" "$DS_URI" >/dev/null ||
        fail "$1: write after repair failed"
    ds_stop "$DS_PID"
    qemu-img check -q "$img" || fail "$1: repaired image not clean"
    qio "$img" "read -P 0x5a 2M 64k" || fail "$1: write did not land"
    n=$((n + 1))
}

uncounted header 0 header
uncounted reftable 1 "refcount table"
uncounted refblock 2 "L2 table or refcount block"
uncounted l1 3 "L1 table"
uncounted l2 4 "L2 table or refcount block"
echo "$n images with uncounted metadata refused read-write"
