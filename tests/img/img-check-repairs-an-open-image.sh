#!/bin/sh
# Claim: qcow2_check_image, the entry the server and the write path use
# on an image opened through img_open, finds what diskserve-img check
# finds, repairs a read-only opened image through a second descriptor
# (leaks, errors, COPIED flags, a refcount table to rebuild) so that
# qemu-img check is clean and the data unchanged, reports whether it
# wrote and rebuilt, and refuses raw images.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"

OPEN_CHECK="$abs_top_builddir/tests/img/img-check-open"
cd "$T"

qemu-img create -q -f qcow2 pristine.qcow2 32M
qemu-io -c "write -P 1 0 2M" -c "write -c -P 2 4M 256k" \
    -c "write -P 3 8M 64k" pristine.qcow2 >/dev/null
qemu-img snapshot -c snap pristine.qcow2
qemu-io -c "write -P 4 0 64k" pristine.qcow2 >/dev/null

# value NAME FILE: one count from img-check-open's output.
value() { awk -F= -v k="$1" '$1 == k { print $2 }' "$2"; }

"$OPEN_CHECK" pristine.qcow2 >clean.out || fail "check of a clean image"
[ "$(value corruptions clean.out)$(value leaks clean.out)" = 00 ] ||
    fail "clean image: $(cat clean.out)"
[ "$(value metadata_changed clean.out)" = 0 ] || fail "a check wrote"
img check --output=json pristine.qcow2 >ours.json
/usr/bin/python3 - ours.json clean.out <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
kv = dict(l.strip().split('=') for l in open(sys.argv[2]))
for k in ('image-end-offset', 'allocated-clusters', 'total-clusters',
          'fragmented-clusters', 'compressed-clusters'):
    assert int(kv[k.replace('-', '_')]) == j[k], (k, kv, j)
PY

# broken NAME KIND COMMAND...: poke a copy; check, then repair it open.
broken()
{
    local name=$1 kind=$2
    shift 2
    cp pristine.qcow2 $name.qcow2
    "$@" $name.qcow2 >/dev/null
    "$OPEN_CHECK" $name.qcow2 none >$name.found || fail "$name: check"
    [ "$(value $kind $name.found)" != 0 ] || fail "$name: no $kind found"
    "$OPEN_CHECK" $name.qcow2 all >$name.fixed || fail "$name: repair"
    [ "$(value corruptions $name.fixed)$(value leaks $name.fixed)" = 00 ] ||
        fail "$name: left $(cat $name.fixed)"
    [ "$(value metadata_changed $name.fixed)" = 1 ] ||
        fail "$name: repair did not say it wrote"
    qemu_clean $name.qcow2
    qemu-img compare -q pristine.qcow2 $name.qcow2 ||
        fail "$name: data changed"
}

leak() { $POKE "$1" refcount $($POKE "$1" host-cluster 0) 5; }
error() { $POKE "$1" refcount $($POKE "$1" host-cluster $((8 << 20))) 0; }
copied() { $POKE "$1" l2-bit 0 63 0; }
no_block() { $POKE "$1" reftable 0 0; }
broken leak leaks leak
broken error corruptions error
broken copied corruptions copied
broken no-block corruptions no_block
[ "$(value refcounts_rebuilt no-block.fixed)" = 1 ] ||
    fail "no-block: not rebuilt"
[ "$(value refcounts_rebuilt leak.fixed)" = 0 ] || fail "leak: rebuilt"

# A leak-only repair leaves errors alone.
cp pristine.qcow2 both.qcow2
leak both.qcow2 >/dev/null
$POKE both.qcow2 l2-bit $((8 << 20)) 8 1 >/dev/null     # reserved bit
"$OPEN_CHECK" both.qcow2 leaks >both.out || fail "both: repair"
[ "$(value leaks_fixed both.out)" = 1 ] || fail "both: leak not fixed"
[ "$(value corruptions both.out)" != 0 ] || fail "both: error fixed"

qemu-img create -q -f raw r.img 1M
rc=0
"$OPEN_CHECK" r.img >/dev/null 2>&1 || rc=$?
[ "$rc" = 3 ] || fail "raw image: exit $rc, expected -ENOTSUP"
echo OK
