#!/bin/sh
# Claim: a raw export of an RBD image, whose requests the loop thread
# hands to librbd's aio itself (server/rbd-direct.c), serves six writing
# connections with 32 requests in flight each (writes, zero writes,
# trims, flushes, FUA) beside two reading connections with 32 reads in
# flight each over data laid down first, and every byte ends as the
# clients' shadow says: each read returns what was written, and the
# image read back through the export, by `rbd export` and by qemu's rbd
# driver matches the shadow.  A flush of a writable export, a read of a
# read-only snapshot export and requests of connections closed with
# requests in flight all take the same path.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/rbd/rbd-functions.sh"

size=$((64 << 20))
ro=$((16 << 20))            # [0, ro): read by the readers only
writers=6
rbd create --size 64M rbd/disk
truncate -s $size "$T/shadow"
ds_start ds -v -f raw rbd:rbd/disk

# reader URI SEED: lay down a pattern over [0, ro) (the first reader
# only), then read random ranges back, 32 in flight, checking each.
cat >"$T/reader.py" <<'PY'
import random, sys
import nbd
uri, seed, ro, fill = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    sys.argv[4] == "fill"
def pat(off, n):
    first = off - off % 8
    w = b"".join((o * 2654435761 & (2**64 - 1)).to_bytes(8, "big")
                 for o in range(first, off + n + 8, 8))
    return w[off - first:off - first + n]
h = nbd.NBD()
h.connect_uri(uri)
if fill:
    for off in range(0, ro, 1 << 20):
        h.pwrite(pat(off, 1 << 20), off)
    h.flush()
    print("filled")
    sys.exit(0)
rng = random.Random(seed)
bad = []
left = 4000
inflight = 0
def check(buf, off, n, err):
    global inflight
    inflight -= 1
    if err.value:
        bad.append("read %d+%d failed: %d" % (off, n, err.value))
    elif bytes(buf.to_bytearray()) != pat(off, n):
        bad.append("read %d+%d returned other bytes" % (off, n))
    return 1
while left or inflight:
    while left and inflight < 32:
        n = rng.choice([512, 4096, 4096, 65536, 1 << 20])
        off = rng.randrange(0, ro - n + 1)
        buf = nbd.Buffer(n)
        inflight += 1
        left -= 1
        h.aio_pread(buf, off, completion=lambda err, b=buf, o=off, n=n:
                    check(b, o, n, err))
    h.poll(-1)
h.shutdown()
if bad:
    print("FAIL: %d bad reads, first: %s" % (len(bad), bad[0]),
          file=sys.stderr)
    sys.exit(1)
print("reader %d: 4000 reads ok" % seed)
PY
/usr/bin/python3 "$T/reader.py" "$DS_URI" 0 $ro fill ||
    fail "laying down the read pattern"
grep -q "raw requests go to the backend from the loop" "$T/ds.log" ||
    fail "the export does not say it uses the loop path"
cp "$T/shadow" "$T/shadow.tmp"
/usr/bin/python3 - "$T/shadow.tmp" $ro <<'PY'
import sys
ro = int(sys.argv[2])
with open(sys.argv[1], "r+b") as f:
    for off in range(0, ro, 8):
        f.write((off * 2654435761 & (2**64 - 1)).to_bytes(8, "big"))
PY
mv "$T/shadow.tmp" "$T/shadow"

pids=""
for i in 1 2; do
    /usr/bin/python3 "$T/reader.py" "$DS_URI" $((SEED + 100 + i)) $ro read \
        >"$T/reader$i.log" 2>&1 &
    pids="$pids $!"
done
i=0
while [ $i -lt $writers ]; do
    lo=$((ro + (size - ro) / writers * i / 4096 * 4096))
    hi=$((ro + (size - ro) / writers * (i + 1) / 4096 * 4096))
    [ $((i + 1)) -lt $writers ] || hi=$size
    $WORKLOAD "$DS_URI" "$T/shadow" --seed $((SEED + i)) --start $lo \
        --end $hi --ops 1500 --inflight 32 --hot $((256 << 10)) \
        --max-len $((128 << 10)) >"$T/w$i.log" 2>&1 &
    pids="$pids $!"
    i=$((i + 1))
done
bad=0
for p in $pids; do
    wait "$p" || bad=1
done
cat "$T"/reader*.log "$T"/w*.log
[ $bad = 0 ] || fail "a client failed"

# Connections that go away with requests in flight: the server answers
# into closed sockets and goes on serving.  The writes rewrite what the
# read range holds, so the image is the same whichever of them ran.
/usr/bin/python3 - "$DS_URI" <<'PY'
import sys
import nbd
def pat(off, n):
    return b"".join((o * 2654435761 & (2**64 - 1)).to_bytes(8, "big")
                    for o in range(off, off + n, 8))
for _ in range(4):
    h = nbd.NBD()
    h.connect_uri(sys.argv[1])
    for k in range(64):
        h.aio_pread(nbd.Buffer(65536), k * 65536)
        h.aio_pwrite(pat(k * 4096, 4096), k * 4096, flags=nbd.CMD_FLAG_FUA)
    h.aio_flush()
    del h       # closes with the requests unanswered
PY
qemu-img compare -f raw -F raw "$DS_URI" "$T/shadow" ||
    fail "the export reads otherwise than the shadow"
ds_stop "$DS_PID" || fail "diskserve exited with an error"
grep "rbd: rbd/disk:" "$T/ds.log" && fail "an RBD operation failed"

same_as_shadow final rbd/disk "$T/shadow"
qemu-img compare -f raw -F raw "rbd:rbd/disk:conf=$CEPH_CONF" "$T/shadow" ||
    fail "qemu's rbd driver reads otherwise than the shadow"

# A read-only snapshot export reads through the same path.
rbd snap create rbd/disk@s1 >/dev/null 2>&1 || fail "rbd snap create"
ds_start snap -v -f raw rbd:rbd/disk@s1
qemu-img compare -f raw -F raw "$DS_URI" "$T/shadow" ||
    fail "the snapshot export reads otherwise than the shadow"
grep -q "raw requests go to the backend from the loop" "$T/snap.log" ||
    fail "the snapshot export does not use the loop path"
ds_stop "$DS_PID" || fail "diskserve (snapshot) exited with an error"
echo "ok"
