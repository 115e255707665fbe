#!/bin/sh
# The I/O log records every kind of change the io layer makes (writes,
# vectored writes, zero writes, syncs, truncates up and down, fallocate
# growth, punch and zero range, marks, injected faults) well enough that
# replaying it rebuilds the files exactly: the base of each crash point
# is the file as it was when that sync was issued, a file never synced
# has an empty base, and the last point with its whole epoch is the
# final file.
. "$abs_top_srcdir/tests/functions.sh"

writer="$abs_top_builddir/tests/crash/io-log-writer"
replay="$abs_top_builddir/tests/crash/crash-replay"
: >"$T/f"
: >"$T/f.2"
: >"$T/empty"
DISKSERVE_IO_LOG="$T/log" DISKSERVE_FAULT=L2:2:EIO "$writer" "$T/f" \
    >"$T/writer.out" 2>&1 || fail "io-log-writer: $(cat "$T/writer.out")"
grep -q "injected Input/output error into a L2 operation" "$T/writer.out" ||
    fail "no message for the injected fault: $(cat "$T/writer.out")"

"$replay" "$T/log" --dump >"$T/dump"
grep -q " fault .* L2 .* refused write off 0 len 512 " "$T/dump" ||
    fail "no FAULT record for the refused L2 write: $(cat "$T/dump")"
grep -q " mark .* cookie 7 FLUSH" "$T/dump" || fail "no mark record"
grep -q " file 0 .*/f$" "$T/dump" || fail "first file not named"
grep -q " file 1 .*/f.2$" "$T/dump" || fail "second file not named"
[ "$(grep -c ' sync-end .* result 0' "$T/dump")" = 3 ] ||
    fail "want three successful syncs: $(cat "$T/dump")"

"$replay" "$T/log" --points >"$T/points"
[ "$(wc -l <"$T/points")" = 4 ] || fail "want 4 crash points: $(cat "$T/points")"

initial="--initial f=$T/empty --initial f.2=$T/empty"
for k in 1 2 3; do
    mkdir "$T/s$k"
    # shellcheck disable=SC2086
    "$replay" "$T/log" $initial --state "k=$k,ops=0" --out "$T/s$k"
    cmp "$T/s$k/f" "$T/f.base-$k" || fail "base of point $k differs"
    cmp "$T/s$k/f.2" "$T/empty" || fail "unsynced file not empty at $k"
done

n=$(sed -n 's/^k=3 .*, epoch \([0-9]*\) changes.*/\1/p' "$T/points")
[ "$n" -ge 2 ] && [ "$n" -lt 60 ] || fail "odd last epoch: $n changes"
mask=$(printf %x $(( (1 << n) - 1 )))
mkdir "$T/full"
# shellcheck disable=SC2086
"$replay" "$T/log" $initial --state "k=3,ops=$mask" --out "$T/full"
cmp "$T/full/f" "$T/f" || fail "the whole log does not rebuild the file"
cmp "$T/full/f.2" "$T/f.2" || fail "the whole log does not rebuild f.2"
echo "replayed $(grep -c . "$T/dump") records exactly"
