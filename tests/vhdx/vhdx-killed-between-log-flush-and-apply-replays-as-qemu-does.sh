#!/bin/sh
# Claim: when the server dies by SIGKILL between the sync that makes a
# log entry durable and the in-place BAT writes (the test-only crash
# point DISKSERVE_VHDX_CRASH=after-log-flush, reached by the first FLUSH
# after writes that allocate blocks), the file is left with a pending
# log (QEMU refuses to open it read-only), and replaying it gives what
# QEMU's own replay gives (`qemu-img check -r all` on a copy): a
# read-only export of the file, a read-write open (which replays into
# the file; afterwards qemu-img check is clean and qemu reads the same)
# and QEMU's replay all read the data written before the FLUSH.
# `diskserve-img check` reports the pending log (exit 2) and with -r all
# replays it (exit 0), giving the same file content.
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img /usr/bin/python3 cmp
SEED=${SEED:-$(date +%s)}
echo "seed: $SEED"

img="$T/k.vhdx"
truncate -s 16M "$T/shadow"
qemu-img convert -q -f raw -O vhdx -o block_size=1M "$T/shadow" "$img"
export DISKSERVE_VHDX_CRASH=after-log-flush
ds_start killed -f vhdx "$img"
unset DISKSERVE_VHDX_CRASH
/usr/bin/python3 - "$DS_URI" "$T/shadow" "$SEED" <<'PY' || true
import nbd, random, sys
r = random.Random(int(sys.argv[3]))
h = nbd.NBD()
h.connect_uri(sys.argv[1])
with open(sys.argv[2], "r+b") as shadow:
    for i in range(12):
        n = r.randrange(1, 64) * 4096
        off = r.randrange(0, (16 << 20) - n) // 512 * 512
        data = r.randbytes(n)
        h.pwrite(data, off)
        shadow.seek(off)
        shadow.write(data)
try:
    h.flush()
except nbd.Error:
    pass
PY
rc=0
wait "$DS_PID" || rc=$?
[ $rc = 137 ] || fail "the server did not die by SIGKILL (status $rc)"
grep -q "stopping after the log flush" "$T/killed.log" ||
    fail "the crash point was not reached"
if qemu-img check -f vhdx "$img" >"$T/pending" 2>&1; then
    fail "no pending log after the kill"
fi
grep -q "needs to be replayed" "$T/pending" || {
    cat "$T/pending" >&2
    fail "qemu-img check did not ask for a replay"
}

cp "$img" "$T/q.vhdx"
qemu-img check -r all -f vhdx "$T/q.vhdx" >"$T/q.check" 2>&1 || {
    cat "$T/q.check" >&2
    fail "QEMU cannot replay the log"
}
qemu-img convert -q -f vhdx -O raw "$T/q.vhdx" "$T/q.raw"
cmp "$T/q.raw" "$T/shadow" || fail "QEMU's replay lost written data"

rc=0
"$DISKSERVE_IMG" check "$img" >"$T/dcheck" 2>&1 || rc=$?
[ $rc = 2 ] || { cat "$T/dcheck" >&2; fail "diskserve-img check: $rc"; }
cp "$img" "$T/d.vhdx"
"$DISKSERVE_IMG" check -r all "$T/d.vhdx" >"$T/drepair" 2>&1 || {
    cat "$T/drepair" >&2
    fail "diskserve-img check -r all"
}
"$DISKSERVE_IMG" check "$T/d.vhdx" || fail "diskserve-img check after -r"
qemu-img compare -f vhdx -F raw "$T/d.vhdx" "$T/q.raw" ||
    fail "diskserve-img check -r all replayed otherwise"

ds_start ro -r -f vhdx "$img"
qemu-img convert -q -f raw -O raw "$DS_URI" "$T/ro.raw"
ds_stop "$DS_PID" || fail "read-only server exit status $?"
cmp "$T/ro.raw" "$T/q.raw" || fail "read-only replay differs from QEMU's"

ds_start rw -f vhdx "$img"
qemu-img convert -q -f raw -O raw "$DS_URI" "$T/rw.raw"
ds_stop "$DS_PID" || fail "read-write server exit status $?"
cmp "$T/rw.raw" "$T/q.raw" || fail "read-write replay differs from QEMU's"
qemu-img check -f vhdx "$img" || fail "qemu-img check after our replay"
qemu-img compare -f vhdx -F raw "$img" "$T/q.raw" ||
    fail "the replayed file differs from QEMU's replay"
echo "replayed: $(grep -F 'into the file' "$T/rw.log")"
