#!/bin/sh
# Claim: with --bitmaps-crash-safe, a server killed with SIGKILL at a
# random moment while a client pipelines random writes leaves bitmaps
# that the next server still exports (QEMU would call them in use and
# drop them), and every 512-byte sector that changed lies in a dirty
# extent of each enabled bitmap, as nbdinfo --map reads them over NBD;
# a disabled bitmap is unchanged.  50 rounds on one image (fewer with
# KILL_ROUNDS=N); after a leak repair and a clean stop, qemu-img check
# is clean and qemu-nbd exports the same extents.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps/bitmaps-functions.sh"
UNCOVERED="/usr/bin/python3 $abs_top_srcdir/tests/bitmaps/uncovered.py"
rounds=${KILL_ROUNDS:-50}
seed=${SEED:-$(date +%s)}
echo "seed $seed, $rounds rounds"

f="$T/disk.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=64k "$f" 64M
qemu-io -c 'write -P 5 0 8M' "$f" >/dev/null
qemu-img bitmap --add -g 64k "$f" coarse
qemu-img bitmap --add -g 4k "$f" fine
qemu-img bitmap --add -g 1M --disable "$f" off
qemu-io -c 'write -P 6 16M 1M' "$f" >/dev/null
qemu_map "$f" off >"$T/off.before"

cat >"$T/writer.py" <<'PY'
import random, sys, nbd
uri, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
try:
    while True:
        while h.aio_in_flight() < 16:
            n = r.choice((512, 4096, 65536))
            off = r.randrange(0, size - n, 512)
            h.aio_pwrite(r.randbytes(n), off)
        h.poll(-1)
        h.aio_peek_command_completed()
        while h.aio_peek_command_completed():
            h.aio_command_completed(h.aio_peek_command_completed())
except Exception:
    pass
PY

# ds_map NAME: the dirty runs of bitmap NAME as a read-only diskserve
# exports them.
ds_map()
{
    nbdinfo --map="qemu:dirty-bitmap:$1" "$DS_URI" >"$T/dmap.out" ||
        fail "round $r: bitmap $1 not exported after the crash"
    awk '$3 == 1 { print $1, $2 }' "$T/dmap.out" | merge_runs
}

r=0 busy=0
while [ $r -lt $rounds ]; do
    r=$((r + 1))
    qemu-img convert -U -O raw "$f" "$T/old.raw"
    ds_start w --bitmaps-crash-safe -f qcow2 "$f"
    /usr/bin/python3 "$T/writer.py" "$DS_URI" $((seed + r)) &
    wpid=$!
    sleep "$(awk -v s=$((seed + r)) 'BEGIN { srand(s); printf "%.2f", 0.05 + rand() * 0.5 }')"
    kill -9 "$DS_PID"
    wait "$DS_PID" 2>/dev/null || true
    wait "$wpid" 2>/dev/null || true

    qemu-img convert -U -O raw "$f" "$T/new.raw"
    ds_start ro -r -f qcow2 "$f"
    for b in coarse fine; do
        ds_map $b >"$T/$b.map"
        $UNCOVERED "$T/old.raw" "$T/new.raw" "$T/$b.map" >"$T/unc" ||
            { cat "$T/unc" >&2;
              fail "round $r (seed $seed): bitmap $b misses changed sectors"; }
    done
    ds_map off >"$T/off.now"
    cmp -s "$T/off.before" "$T/off.now" ||
        fail "round $r: the disabled bitmap changed"
    ds_stop "$DS_PID" || fail "round $r: read-only server exit status"
    echo "round $r: $(cat "$T/unc") sectors changed, all inside both bitmaps"
    [ "$(cat "$T/unc")" = 0 ] || busy=$((busy + 1))
done
[ $busy -ge $((rounds * 3 / 4)) ] ||
    fail "only $busy of $rounds rounds changed the disk before the kill"

"$DISKSERVE_IMG" check -q -r leaks "$f" || fail "repairing the leaks"
ds_start last --bitmaps-crash-safe -f qcow2 "$f"
ds_map fine >"$T/fine.last"
ds_stop "$DS_PID" || fail "clean stop"
qemu-img check "$f" >"$T/check" 2>&1 || { cat "$T/check" >&2; fail "qemu-img check"; }
qemu-img info "$f" | grep -q "in-use" && fail "in-use flag left after a clean stop"
qemu_map "$f" fine >"$T/fine.qemu"
cmp -s "$T/fine.last" "$T/fine.qemu" ||
    fail "qemu-nbd exports other extents than diskserve did"
echo "$busy of $rounds rounds changed the disk; every change covered"
