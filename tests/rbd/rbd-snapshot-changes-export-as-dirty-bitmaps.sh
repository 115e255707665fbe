#!/bin/sh
# Claim: a raw export of an RBD image offers each of the image's
# snapshots S as the meta context qemu:dirty-bitmap:S, meaning "changed
# since S": its dirty extents are exactly what `rbd diff --from-snap S`
# lists, and applying only those extents, read from the export, to a
# copy of the snapshot (`rbd export IMAGE@S`) reproduces the image, as a
# backup agent's incremental copy would.  A snapshot taken while the
# server runs is offered to the clients that connect after it.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/rbd/rbd-functions.sh"

rbd create --size 32M rbd/img
ds_start ds -f raw rbd:rbd/img
qemu-io -f raw -c "write -P 0x41 0 12M" -c "write -P 0x42 20M 3M" \
    -c flush "$DS_URI" >/dev/null || fail "first writes"
rbd snap create rbd/img@monday >/dev/null 2>&1 || fail "rbd snap create"
qemu-io -f raw -c "write -P 0x43 1M 64k" -c "write -P 0x44 5M 3M" \
    -c "discard 8M 4M" -c "write -P 0x45 30M 512" -c flush "$DS_URI" \
    >/dev/null || fail "writes after monday"
rbd snap create rbd/img@tuesday >/dev/null 2>&1 || fail "rbd snap create"
qemu-io -f raw -c "write -P 0x46 21M 4k" -c flush "$DS_URI" >/dev/null ||
    fail "writes after tuesday"

nbdinfo --list "nbd+unix:///?socket=$DS_SOCK" >"$T/list"
for s in monday tuesday; do
    grep -q "qemu:dirty-bitmap:$s" "$T/list" || {
        cat "$T/list" >&2
        fail "qemu:dirty-bitmap:$s is not offered"
    }
done

for s in monday tuesday; do
    nbdinfo --map="qemu:dirty-bitmap:$s" "$DS_URI" >"$T/$s.map"
    rbd diff --from-snap "$s" rbd/img --format json >"$T/$s.json"
    /usr/bin/python3 - "$T/$s.map" "$T/$s.json" <<'PY' || fail "$s: the bitmap and rbd diff disagree"
import json, sys
def merge(runs):
    out = []
    for a, b in sorted(runs):
        if out and out[-1][1] >= a:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
want = merge((e["offset"], e["offset"] + e["length"])
             for e in json.load(open(sys.argv[2])))
got, pos = [], 0
for line in open(sys.argv[1]):
    off, length, typ = (int(x) for x in line.split()[:3])
    assert off == pos, line
    pos = off + length
    if typ & 1:
        got.append((off, pos))
got = merge(got)
assert got and got == want, (got, want)
print("changed:", got)
PY

    # The incremental copy: the snapshot plus what the bitmap says changed.
    rbd export "rbd/img@$s" "$T/$s.raw" >/dev/null 2>&1 ||
        fail "$s: rbd export of the snapshot"
    /usr/bin/python3 - "$DS_URI" "$s" "$T/$s.raw" <<'PY' || fail "$s: incremental copy"
import sys
import nbd
uri, snap, path = sys.argv[1:]
ctx = "qemu:dirty-bitmap:" + snap
h = nbd.NBD()
h.add_meta_context(ctx)
h.connect_uri(uri)
size = h.get_size()
runs = []
def got(metacontext, offset, entries, err):
    if metacontext != ctx:
        return
    for i in range(0, len(entries), 2):
        runs.append((offset, entries[i], entries[i + 1]))
        offset += entries[i]
off = 0
while off < size:
    n = min(size - off, 1 << 30)
    runs.clear()
    h.block_status(n, off, got)
    off = runs[-1][0] + runs[-1][1]
    copied = 0
    with open(path, "r+b") as f:
        for o, length, flags in runs:
            if flags & 1:
                f.seek(o)
                f.write(h.pread(length, o))
                copied += length
print("copied %d bytes" % copied)
PY
    qemu-img compare -f raw -F raw "$DS_URI" "$T/$s.raw" ||
        fail "$s: snapshot + changed extents is not the image"
done

rbd snap create rbd/img@wednesday >/dev/null 2>&1 || fail "rbd snap create"
nbdinfo --list "nbd+unix:///?socket=$DS_SOCK" | grep -q "qemu:dirty-bitmap:wednesday" ||
    fail "a snapshot taken while serving is not offered to new clients"
nbdinfo --map="qemu:dirty-bitmap:wednesday" "$DS_URI" | awk '$3 != 0 { exit 1 }' ||
    fail "nothing was written since wednesday, yet the bitmap is dirty"
ds_stop "$DS_PID" || fail "diskserve exited with an error"
echo ok
