#!/bin/sh
# Claim: `image = rbd:POOL/IMAGE@SNAP` in a config file (beside an
# export of the live image) exports the RBD snapshot: it reads as the
# image did when the snapshot was taken although the image was written
# since, it is advertised read-only and refuses writes, its block status
# matches `rbd diff` of the snapshot, and the live export beside it reads
# the new data.  `-l SNAP` with the image's name does the same; on a
# qcow2 image in RBD, -l keeps naming a qcow2 internal snapshot.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/rbd/rbd-functions.sh"

size=$((16 << 20))
rbd create --size 16M rbd/img
ds_start live -f raw rbd:rbd/img
qemu-io -f raw -c "write -P 0x11 0 6M" -c "write -P 0x12 9M 1M" -c flush \
    "$DS_URI" >/dev/null || fail "first writes"
qemu-img convert -f raw -O raw "$DS_URI" "$T/old.raw"
rbd snap create rbd/img@before >/dev/null 2>&1 || fail "rbd snap create"
qemu-io -f raw -c "write -P 0x21 1M 2M" -c "write -P 0x22 12M 4M" \
    -c "discard 4M 4M" -c flush "$DS_URI" >/dev/null || fail "later writes"
qemu-img convert -f raw -O raw "$DS_URI" "$T/new.raw"
ds_stop "$DS_PID" || fail "diskserve exited with an error"
cmp -s "$T/old.raw" "$T/new.raw" && fail "the later writes changed nothing"

cat >"$T/exports.conf" <<EOC
[export snap]
image = rbd:rbd/img@before:conf=$CEPH_CONF
[export live]
image = rbd:rbd/img
format = raw
EOC
sock="$T/conf.sock"
"$DISKSERVE" --config "$T/exports.conf" -k "$sock" >"$T/conf.log" 2>&1 &
pid=$!
_ds_pids="$_ds_pids $pid"
wait_for_socket "$sock" "$pid"
snap="nbd+unix:///snap?socket=$sock"
live="nbd+unix:///live?socket=$sock"

qemu-img compare -f raw -F raw "$snap" "$T/old.raw" ||
    fail "the snapshot export reads otherwise than the image before"
qemu-img compare -f raw -F raw "$live" "$T/new.raw" ||
    fail "the live export reads otherwise than the image now"
nbdinfo "$snap" | grep -q "is_read_only: true" ||
    fail "the snapshot export is not advertised read-only"
/usr/bin/python3 - "$snap" <<'PY' || fail "a write to the snapshot was accepted"
import sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"x" * 512, 0)
except nbd.Error as e:
    print("write refused:", e.string)
    sys.exit(0)
sys.exit(1)
PY
nbdinfo --map "$snap" >"$T/map"
rbd diff rbd/img@before --format json >"$T/diff.json"
/usr/bin/python3 - "$T/map" "$T/diff.json" <<'PY' || fail "the snapshot's map and rbd diff disagree"
import json, sys
want = [(e["offset"], e["offset"] + e["length"])
        for e in json.load(open(sys.argv[2]))]
got, pos = [], 0
for line in open(sys.argv[1]):
    off, length, typ = (int(x) for x in line.split()[:3])
    assert off == pos, line
    pos = off + length
    if typ & 1 == 0:
        if got and got[-1][1] == off:
            got[-1] = (got[-1][0], pos)
        else:
            got.append((off, pos))
merged = []
for a, b in sorted(want):
    if merged and merged[-1][1] == a:
        merged[-1] = (merged[-1][0], b)
    else:
        merged.append((a, b))
assert got == merged, (got, merged)
print("snapshot data extents:", got)
PY
ds_stop "$pid" || fail "the config-file server exited with an error"

# -l SNAP on the command line names the same snapshot (qemu-nbd's
# option for it), read-only; with a snapshot in the name as well it is
# refused with one line.
ds_start lsnap -f raw -l before "rbd:rbd/img:conf=$CEPH_CONF"
qemu-img compare -f raw -F raw "$DS_URI" "$T/old.raw" ||
    fail "-l before reads otherwise than the image before"
nbdinfo "$DS_URI" | grep -q "is_read_only: true" ||
    fail "the -l export is not advertised read-only"
ds_stop "$DS_PID" || fail "the -l server exited with an error"
rc=0
"$DISKSERVE" -k "$T/twice.sock" -l before rbd:rbd/img@before \
    >"$T/twice.log" 2>&1 || rc=$?
[ $rc = 1 ] && [ "$(wc -l <"$T/twice.log")" = 1 ] &&
    grep -q "a snapshot in the name and -l before" "$T/twice.log" || {
    cat "$T/twice.log" >&2
    fail "a snapshot named twice: exit $rc"
}

# A qcow2 image in RBD: without -f, -l still names one of the qcow2
# file's internal snapshots (the format is probed first).
q="rbd:rbd/q:conf=$CEPH_CONF"
qemu-img create -q -f qcow2 "$q" 4M || fail "qemu-img create in RBD"
qemu-io -f qcow2 -c "write -P 0x71 0 1M" "$q" >/dev/null || fail "qcow2 write"
qemu-img snapshot -c inside "$q" || fail "qemu-img snapshot -c"
qemu-io -f qcow2 -c "write -P 0x72 0 1M" "$q" >/dev/null || fail "qcow2 write 2"
ds_start qsnap -l inside "$q"
qemu-io -r -f raw -c "read -P 0x71 0 1M" "$DS_URI" >/dev/null ||
    fail "-l on a qcow2 in RBD did not export its internal snapshot"
ds_stop "$DS_PID" || fail "the qcow2 snapshot server exited with an error"
rc=0
"$DISKSERVE" -k "$T/colon.sock" -f raw -l a:b rbd:rbd/img >"$T/colon.log" 2>&1 ||
    rc=$?
[ $rc = 1 ] && grep -q "an RBD snapshot name without" "$T/colon.log" || {
    cat "$T/colon.log" >&2
    fail "-l a:b on an RBD image: exit $rc"
}
echo ok
