#!/bin/sh
# Crash-safe mode (bitmaps_crash_safe): a process writing through the driver is
# killed with SIGKILL at a random moment, round after round; each time
# the bitmaps reopen consistent (not in use, unlike qemu's) and every
# 512-byte sector whose contents changed since the round began lies in a
# dirty run of each enabled bitmap, one added (persistent) by the same
# process just before its writes included.  qemu-img check finds no errors after
# a crash (leaks are allowed) and, after a final clean close, nothing at
# all; qemu-nbd then exports the same runs as our driver.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps/bitmaps-functions.sh"
UNCOVERED="/usr/bin/python3 $abs_top_srcdir/tests/bitmaps/uncovered.py"

rounds=${BITMAP_CRASH_ROUNDS:-20}
seed=${SEED:-$(date +%s)}
echo "seed $seed, $rounds rounds"

f="$T/a.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=64k "$f" 64M
qemu-img bitmap --add -g 64k "$f" coarse
qemu-img bitmap --add -g 512 "$f" fine
qemu-img bitmap --add -g 1M --disable "$f" off
qemu-io -c 'write -P 7 0 1M' "$f" >/dev/null
qemu-img bitmap --enable "$f" off
qemu-io -c 'write -P 8 2M 1M' "$f" >/dev/null
qemu-img bitmap --disable "$f" off
qemu_map "$f" off >"$T/off.map"

r=0
busy=0
while [ $r -lt $rounds ]; do
    r=$((r + 1))
    qemu-img convert -U -O raw "$f" "$T/old.raw"
    "$PROBE" -w -c "$f" add new 4k 1 randwrite 100000 $((seed + r)) \
        >"$T/writes" &
    pid=$!
    _ds_pids="$_ds_pids $pid"
    # Somewhere between just open and well into the writes.
    sleep "$(awk -v s=$((seed + r)) 'BEGIN { srand(s); printf "%.2f", rand() * 0.6 }')"
    kill -9 $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true

    "$PROBE" "$f" list >"$T/list" 2>"$T/err" || fail "round $r: reopen failed"
    grep -q '^coarse 65536 [0-9]* 1 1 0$' "$T/list" &&
        grep -q '^fine 512 [0-9]* 1 1 0$' "$T/list" &&
        grep -q '^off 1048576 1048576 0 1 0$' "$T/list" ||
        { cat "$T/list" "$T/err" >&2; fail "round $r: bitmaps not consistent"; }
    rc=0
    qemu-img check "$f" >"$T/check" 2>&1 || rc=$?
    [ $rc = 0 ] || [ $rc = 3 ] ||
        { cat "$T/check" >&2; fail "round $r: qemu-img check exit $rc"; }
    qemu-img convert -U -O raw "$f" "$T/new.raw"
    bms="coarse fine"
    if grep -q '^new 4096 [0-9]* 1 1 0$' "$T/list"; then
        bms="$bms new"
    elif [ -s "$T/writes" ]; then
        fail "round $r: writes began but the bitmap added before is gone"
    fi
    for b in $bms; do
        probe_map "$f" $b >"$T/$b.map"
        $UNCOVERED "$T/old.raw" "$T/new.raw" "$T/$b.map" >"$T/unc" ||
            { cat "$T/unc" >&2; fail "round $r (seed $seed): bitmap $b misses writes"; }
    done
    if [ "$bms" != "coarse fine" ]; then
        "$DISKSERVE_IMG" bitmap --remove "$f" new || fail "round $r: remove"
    fi
    echo "round $r: $(wc -l <"$T/writes") writes started, $(cat "$T/unc") sectors changed"
    [ "$(cat "$T/unc")" = 0 ] || busy=$((busy + 1))
done
# The kill must not always come before the writes (that would test
# nothing).
[ $busy -ge $((rounds / 2)) ] ||
    fail "only $busy of $rounds rounds changed the disk"

# The crashes leaked clusters (never an error); once they are repaired,
# a clean close leaves nothing for qemu to complain about.
"$DISKSERVE_IMG" check -q -r leaks "$f" >"$T/repair" 2>&1 ||
    { cat "$T/repair" >&2; fail "repairing the leaks"; }
"$PROBE" -w -c "$f" write 63M 4k || fail "final write"
qemu_clean "$f"
for b in coarse fine off; do
    [ "$(qemu_bitmap_flags "$f" $b | cut -d' ' -f1)" != "in-use,auto" ] ||
        fail "bitmap $b in use after a clean close"
done
maps_agree "$f" coarse fine off
qemu_map "$f" off | diff -u "$T/off.map" - >&2 || fail "disabled bitmap changed"
