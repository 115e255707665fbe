#!/bin/sh
# Claim: a raw export of an RBD image takes a random concurrent workload
# from three connections (writes, zero writes with and without NO_HOLE
# and FAST_ZERO, trims, flushes, FUA; eight requests in flight each),
# and afterwards the image holds what the clients' shadow holds, read
# three ways: back through the export, by `rbd export`, and by qemu's
# own rbd driver.  Block status (nbdinfo --map) reports the image's data
# exactly where `rbd diff` lists it and holes that read as zeros
# elsewhere; a trimmed 4 MiB object and one zeroed with MAY_TRIM show
# as holes, one zeroed without it stays allocated.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/rbd/rbd-functions.sh"

size=$((48 << 20))
rbd create --size 48M rbd/disk
truncate -s $size "$T/shadow"
ds_start ds -f raw rbd:rbd/disk
rbd_workload w "$DS_URI" $size 3 "$T/shadow" --ops 300 --inflight 8 \
    --hot $((1 << 20)) --max-len $((256 << 10))

# Whole objects: trimmed, zeroed with MAY_TRIM, zeroed keeping them.
qemu-io -f raw -c "write -P 0x61 36M 12M" -c "discard 36M 4M" \
    -c "write -z -u 40M 4M" -c "write -z 44M 4M" -c flush "$DS_URI" \
    >"$T/io.log" || fail "qemu-io over the export"
/usr/bin/python3 - "$T/shadow" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(36 << 20)
    f.write(b"\0" * (12 << 20))
PY
qemu-img compare -f raw -F raw "$DS_URI" "$T/shadow" ||
    fail "the export reads otherwise than the shadow"

# Block status against rbd diff, on the live export.
nbdinfo --map "$DS_URI" >"$T/map"
rbd diff rbd/disk --format json >"$T/diff.json"
/usr/bin/python3 - "$T/map" "$T/diff.json" $size <<'PY' || fail "map and rbd diff disagree"
import json, sys
size = int(sys.argv[3])
data = [False] * (size // 512)
for e in json.load(open(sys.argv[2])):
    assert e["exists"] == "true" or e["exists"] is True, e
    for s in range(e["offset"] // 512, (e["offset"] + e["length"]) // 512):
        data[s] = True
got = [None] * (size // 512)
for line in open(sys.argv[1]):
    off, length, typ = line.split()[:3]
    off, length, typ = int(off), int(length), int(typ)
    for s in range(off // 512, (off + length) // 512):
        got[s] = (typ & 1) == 0
assert None not in got, "the map does not cover the export"
bad = [s for s in range(len(got)) if got[s] != data[s]]
assert not bad, "first disagreement at %d (map data=%s)" % (
    bad[0] * 512, got[bad[0]])
hole = lambda a, b: not any(got[a // 512:b // 512])
assert hole(36 << 20, 40 << 20), "trimmed object still allocated"
assert hole(40 << 20, 44 << 20), "MAY_TRIM zero write kept the data"
assert all(got[(44 << 20) // 512:(48 << 20) // 512]), \
    "a zero write without MAY_TRIM deallocated"
print("map: %d of %d sectors data, as rbd diff says" % (sum(got), len(got)))
PY

ds_stop "$DS_PID" || fail "diskserve exited with an error"
same_as_shadow final rbd/disk "$T/shadow"
qemu-img compare -f raw -F raw "rbd:rbd/disk:conf=$CEPH_CONF" "$T/shadow" ||
    fail "qemu's rbd driver reads otherwise than the shadow"
echo "ok"
