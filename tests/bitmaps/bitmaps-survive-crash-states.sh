#!/bin/sh
# Every state the file could be in after a power loss during a run of
# random writes and flushes (from DISKSERVE_IO_LOG, see tests/crash)
# passes qemu-img check (leaks allowed), and every bitmap the driver
# reads as consistent holds every sector that changed since the run
# began.  Crash-safe mode: every bitmap reads consistent in every state.
# Plain mode: a bitmap may read inconsistent (in use), never consistent
# and short.  The states include the open-time and close-time stores of
# the directory and header.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps/bitmaps-functions.sh"
UNCOVERED="/usr/bin/python3 $abs_top_srcdir/tests/bitmaps/uncovered.py"
REPLAY="$abs_top_builddir/tests/crash/crash-replay"
seed=${CRASH_SEED:-$(date +%s)}
per_mode=${BITMAP_CRASH_STATES:-60}
echo "seed $seed"
cd "$T"

for mode in crash-safe plain; do
    qemu-img create -q -f qcow2 -o cluster_size=4k a.qcow2 8M
    qemu-img bitmap --add -g 4k a.qcow2 fine
    qemu-img bitmap --add -g 64k a.qcow2 coarse
    qemu-io -c 'write -P 3 1M 256k' a.qcow2 >/dev/null
    cp a.qcow2 init.qcow2
    qemu-img convert -O raw init.qcow2 init.raw
    flag=
    [ $mode = plain ] || flag=-c
    rm -f io.log
    DISKSERVE_IO_LOG="$T/io.log" "$PROBE" -w $flag "$T/a.qcow2" \
        randwrite 60 "$seed" >/dev/null || fail "$mode: the writes failed"
    "$REPLAY" io.log --states --seed "$seed" >states.all ||
        fail "$mode: no states"
    # An even sample, ends included.
    total=$(wc -l <states.all)
    awk -v n=$per_mode -v t=$total \
        'NR == 1 || NR == t || (NR % int(t / n + 1)) == 0' states.all >states
    consistent=0 inconsistent=0
    while read -r spec; do
        rm -rf st
        mkdir st
        "$REPLAY" io.log --initial "$T/a.qcow2=init.qcow2" --state "$spec" \
            --out st || fail "$mode: $spec: cannot build the state"
        rc=0
        qemu-img check st/a.qcow2 >check.out 2>&1 || rc=$?
        [ $rc = 0 ] || [ $rc = 3 ] ||
            { cat check.out >&2; fail "$mode: $spec: qemu-img check exit $rc"; }
        "$PROBE" st/a.qcow2 list >list 2>err ||
            { cat err >&2; fail "$mode: $spec: open failed"; }
        [ "$(wc -l <list)" = 2 ] ||
            { cat list err >&2; fail "$mode: $spec: bitmaps lost"; }
        qemu-img convert -O raw st/a.qcow2 st.raw
        for b in fine coarse; do
            if grep -q "^$b [0-9]* [0-9]* 0 1 1$" list; then
                [ $mode = plain ] ||
                    fail "$mode: $spec: bitmap $b inconsistent"
                inconsistent=$((inconsistent + 1))
                continue
            fi
            consistent=$((consistent + 1))
            "$PROBE" st/a.qcow2 map $b >map
            $UNCOVERED init.raw st.raw map >unc ||
                { cat unc >&2; fail "$mode: $spec (seed $seed): bitmap $b misses writes"; }
        done
    done <states
    echo "$mode: $(wc -l <states) of $total states; bitmaps consistent $consistent, in use $inconsistent"
    [ $consistent -gt 0 ] || fail "$mode: no state had a consistent bitmap"
done
