#!/bin/sh
# The checker can fail: from each crash state of a raw workload, drop one
# durable data write whose value a FLUSH or FUA mark covers, so that its
# sector reverts to a value the checker must refuse.  Every such state
# must be reported.  CRASH_SEED=N replays a seed.
set -eu
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
exec sh "$abs_top_srcdir/tests/crash/run-crash.sh" \
    --requests 150 --min-states 100 --check-arg --lose-covered-write \
    --check-arg '--report 2' \
    --expect-all-fail raw "$seed" 150 truncate -s 1M IMG
