#!/bin/sh
# Claim: when an L2 entry names a cluster 2 TiB past the end of the file
# and a refcount table entry with reserved bits forces a rebuild, check
# -r all drops the reference (its data does not exist) instead of
# covering every offset up to the bogus one (issue 13: a 2 TiB file,
# 13 s, 144 MB): it finishes within the time limit, leaves the file
# about as small as qemu-img check -r all leaves its copy, exits 0, and
# qemu-img check then finds our copy clean (qemu's own repair keeps the
# reference and the error).  With the reserved bits in table entry 0
# (the one holding the only block, where qemu's own rebuild fails) the
# same holds.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"
require timeout

far=$((2 << 40))
# 5 MiB above qemu's size: room for a few structures, far below any
# size that covers the bogus offset.
slack=$((5 << 20))

for entry in 1 0; do
    f="$T/far-$entry.qcow2"
    qemu-img create -q -f qcow2 "$f" 16M
    qemu-io -c "write -P 1 0 128k" "$f" >/dev/null
    $POKE "$f" l2 0 $(( (1 << 63) | far )) >/dev/null
    rt=$($POKE "$f" reftable "$entry")
    $POKE "$f" reftable "$entry" $((rt | 0x100)) >/dev/null
    cp "$f" "$T/ours.qcow2"
    cp "$f" "$T/qemu.qcow2"

    ro=0
    timeout 10 "$DISKSERVE_IMG" check -r all "$T/ours.qcow2" \
        >"$T/ours.out" 2>"$T/ours.err" || ro=$?
    [ "$ro" != 124 ] || fail "entry $entry: check -r all took over 10 s"
    size=$(stat -c %s "$T/ours.qcow2")
    rq=0
    qemu-img check -r all "$T/qemu.qcow2" >"$T/qemu.out" 2>"$T/qemu.err" ||
        rq=$?
    qsize=$(stat -c %s "$T/qemu.qcow2")
    echo "entry $entry: ours exit $ro, $size bytes;" \
         "qemu-img exit $rq, $qsize bytes"
    [ "$size" -le $((qsize + slack)) ] ||
        { cat "$T/ours.err" >&2;
          fail "entry $entry: repair grew the file to $size bytes"; }
    [ "$ro" = 0 ] || { cat "$T/ours.out" "$T/ours.err" >&2;
                       fail "entry $entry: -r all exit $ro, want 0"; }
    qemu-img check "$T/ours.qcow2" >"$T/after.out" 2>&1 ||
        { cat "$T/after.out" >&2;
          fail "entry $entry: qemu-img check after our repair"; }
done
echo OK
