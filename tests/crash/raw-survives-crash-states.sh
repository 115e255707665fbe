#!/bin/sh
# A raw image survives every crash state of a seeded workload: over a
# thousand states, each materialized from the server's I/O log, opened
# read-write, every sector holding its last covered value or a later one,
# then written, flushed and read back.  CRASH_SEED=N replays a seed.
set -eu
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
exec sh "$abs_top_srcdir/tests/crash/run-crash.sh" \
    --requests 300 --min-states 1200 \
    raw "$seed" 1500 truncate -s 1M IMG
