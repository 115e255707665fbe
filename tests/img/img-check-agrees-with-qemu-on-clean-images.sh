#!/bin/sh
# Claim: on images qemu-img and qemu-io build (data, zero and discarded
# clusters, internal snapshots, compressed clusters, backing files,
# extended L2, external data files, persistent bitmaps, metadata
# preallocation, every refcount width, 512 B to 2 MiB clusters, v2 and
# v3, a dirty lazy-refcounts image), diskserve-img check reports what
# qemu-img check reports (errors, leaks, allocation, fragmentation,
# compression, image end) and exits with the same status, as text and as
# JSON.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"

# fill FILE: data, zeros, a discard, compressed clusters.
fill()
{
    qemu-io -c "write -P 1 0 3M" -c "write -c -P 2 8M 2M" \
        -c "write -z 10M 1M" -c "write -P 3 20M 100k" \
        -c "discard 1M 64k" -c "write -P 4 63M 4k" "$1" >/dev/null
}

n=0
for o in "" compat=0.10 cluster_size=512 cluster_size=4k cluster_size=2M \
         extended_l2=on extended_l2=on,compression_type=zstd \
         refcount_bits=2 refcount_bits=8 refcount_bits=32 \
         refcount_bits=64 lazy_refcounts=on; do
    n=$((n + 1))
    f="$T/c$n.qcow2"
    qemu-img create -q -f qcow2 ${o:+-o "$o"} "$f" 64M
    fill "$f"
    check_agrees "$f"
    [ "$CHECK_STATUS" = 0 ] || fail "qemu-made image -o '$o' not clean"
    # Snapshots share clusters: refcounts above 1, COPIED flags cleared.
    # (Two-bit refcounts overflow on the packed compressed clusters.)
    [ "$o" != refcount_bits=2 ] || continue
    qemu-img snapshot -c one "$f"
    qemu-io -c "write -P 5 0 1M" -c "write -c -P 6 12M 2M" "$f" >/dev/null
    qemu-img snapshot -c two "$f"
    qemu-io -c "write -P 7 512k 1M" "$f" >/dev/null
    check_agrees "$f"
done

# One-bit refcounts (no snapshots possible).
f="$T/one.qcow2"
qemu-img create -q -f qcow2 -o refcount_bits=1 "$f" 64M
fill "$f"
check_agrees "$f"

# A backing chain: the overlay is checked alone.
qemu-img create -q -f qcow2 -b c1.qcow2 -F qcow2 "$T/over.qcow2" 100M
qemu-io -c "write -P 8 2M 2M" -c "write -z 8M 64k" "$T/over.qcow2" \
    >/dev/null
check_agrees "$T/over.qcow2"

# External data file: data clusters are not counted in the image.
qemu-img create -q -f qcow2 -o data_file="$T/ext.data" "$T/ext.qcow2" 64M
qemu-io -c "write -P 1 0 3M" -c "write -z 10M 1M" -c "discard 1M 64k" \
    "$T/ext.qcow2" >/dev/null
check_agrees "$T/ext.qcow2"

# Persistent bitmaps: directory, tables and bitmap clusters.
qemu-img create -q -f qcow2 "$T/bm.qcow2" 64M
qemu-img bitmap --add "$T/bm.qcow2" b1
qemu-img bitmap --add -g 512k "$T/bm.qcow2" b2
qemu-io -c "write -P 1 0 3M" -c "write -P 2 40M 64k" "$T/bm.qcow2" \
    >/dev/null
check_agrees "$T/bm.qcow2"

# Metadata preallocation: L2 tables map clusters never written.
qemu-img create -q -f qcow2 -o preallocation=metadata "$T/pre.qcow2" 32M
check_agrees "$T/pre.qcow2"

# A converted, compressed image.
qemu-img convert -q -c -O qcow2 "$T/c1.qcow2" "$T/conv.qcow2"
check_agrees "$T/conv.qcow2"

# An image whose writer died with lazy refcounts: dirty, leaks missing
# refcounts (errors) and COPIED flags that disagree.
f="$T/dirty.qcow2"
qemu-img create -q -f qcow2 -o lazy_refcounts=on "$f" 64M
qemu-io -c "write -P 1 0 3M" -c "write -P 2 10M 64k" -c "sigraise 9" \
    "$f" >/dev/null 2>&1 || true
qemu-img info "$f" | grep -q "cleanly shut down: no" ||
    fail "the lazy-refcounts image is not dirty"
check_agrees "$f"
[ "$CHECK_STATUS" = 2 ] || fail "dirty image: expected errors"

# LUKS: the header area counts; no key is needed here (qemu needs it).
if qemu-img create -q -f qcow2 --object secret,id=s0,data=hunter2 \
       -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 \
       "$T/luks.qcow2" 64M 2>/dev/null; then
    opts="driver=qcow2,file.filename=$T/luks.qcow2,encrypt.key-secret=s0"
    qemu-io --object secret,id=s0,data=hunter2 --image-opts "$opts" \
        -c "write -P 1 0 1M" -c "write -P 2 5M 64k" >/dev/null
    img check "$T/luks.qcow2" >"$T/ours.out" || fail "LUKS image check"
    qemu-img check --object secret,id=s0,data=hunter2 --image-opts "$opts" \
        >"$T/qemu.out"
    $IMGCMP check "$T/ours.out" "$T/qemu.out" || fail "LUKS check differs"
fi

# JSON output carries the same numbers.
img check --output=json "$T/c1.qcow2" >"$T/ours.json"
qemu-img check --output=json "$T/c1.qcow2" >"$T/qemu.json"
/usr/bin/python3 - "$T/ours.json" "$T/qemu.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for k in ('image-end-offset', 'total-clusters', 'check-errors',
          'allocated-clusters', 'fragmented-clusters', 'compressed-clusters',
          'format'):
    assert a.get(k) == b.get(k), (k, a.get(k), b.get(k))
PY

# Raw images have nothing to check, as with qemu-img (exit 63).
qemu-img create -q -f raw "$T/r.img" 1M
rc=0
img check "$T/r.img" 2>/dev/null || rc=$?
[ "$rc" = 63 ] || fail "raw check exit $rc"
echo OK
