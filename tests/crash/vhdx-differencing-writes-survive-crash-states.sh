#!/bin/sh
# A differencing VHDX file (tests/crash/vhdx-make-child.sh: 1 MiB blocks
# over a parent with data everywhere; blocks PARTIALLY_PRESENT,
# NOT_PRESENT and FULLY_PRESENT) survives the crash states of a seeded
# workload: writes turn blocks that show the parent PARTIALLY_PRESENT
# and set sector bitmap bits, which go through the log with the BAT;
# zero writes and trims make blocks ZERO or write zeros over the parent.
# Every state (torn 512 B and 4 KiB pieces of header, log, BAT and bitmap
# writes included) opens in diskserve, replaying its log, holds
# acknowledged-or-later values where no covered write reached a sector
# the parent's data, and takes a write and a flush (crash-check).  QEMU
# cannot open differencing VHDX files, so there is no qemu-img check.
# CRASH_SEED=N replays a seed.
set -eu
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
exec sh "$abs_top_srcdir/tests/crash/run-crash.sh" \
    --requests 150 --min-states 1000 --no-qemu \
    --workload-arg --hot=0.3 --workload-arg --big=0.15 \
    --workload-arg --big-sectors=2048 \
    vhdx "$seed" 1200 \
    sh "$abs_top_srcdir/tests/crash/vhdx-make-child.sh" IMG "$seed"
