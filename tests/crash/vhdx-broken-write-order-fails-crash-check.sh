#!/bin/sh
# The VHDX crash tests can tell a wrong write order: with the order of
# the VHDX log broken on purpose (DISKSERVE_VHDX_BREAK=log-reuse: every
# log entry written at the start of the log, over the previous entry,
# before the sync that makes that entry's in-place BAT writes durable),
# the allocation workload must yield crash states that crash-check
# rejects before its own writes: a torn new entry over an old one whose
# BAT sectors never reached their place leaves a LogGuid with no valid
# entry, or mappings that a flush acknowledged lost.
#
# With bat-before-data (a commit's log entry written without the sync
# that makes the data it maps durable first), a differencing child's
# workload must yield a state whose log maps a block, with sector bitmap
# bits set, while the data written there never reached the file: those
# sectors read zeros where the parent's data or the written data belong.
# (In a file without a parent a new block reads zeros either way.)
#
# The last rule DISKSERVE_VHDX_BREAK knows, apply-before-log-flush (BAT
# sectors written in place before the sync of their log entry), cannot
# be seen by these crash states: BAT entries are 8 bytes inside 512-byte
# pieces, so a torn BAT sector holds each entry either old or new, and
# an old entry only loses a write no flush had covered yet.  The log
# guards against tears inside a 512-byte sector, which this model does
# not make; the run below still checks that the broken order gives no
# false alarm beyond that.
#
# CRASH_SEED=N replays a seed (and the two after it).
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/crash/broken-order-functions.sh"
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
rule=log-reuse
caught $rule "$seed" --server-env DISKSERVE_VHDX_BREAK=$rule \
    --requests 150 --workload-arg --hot=0.3 \
    --workload-arg --big=0.2 --workload-arg --big-sectors=4096 \
    vhdx SEED 300 \
    qemu-img create -q -f vhdx -o block_size=1M IMG 4M
grep '^FAIL k=' "$T/$rule.out" | head -n 3
rule=bat-before-data
caught $rule "$seed" --server-env DISKSERVE_VHDX_BREAK=$rule \
    --requests 150 --no-qemu --workload-arg --hot=0.3 \
    --workload-arg --big=0.15 --workload-arg --big-sectors=2048 \
    vhdx SEED 400 \
    sh "$abs_top_srcdir/tests/crash/vhdx-make-child.sh" IMG SEED
grep '^FAIL k=' "$T/$rule.out" | head -n 3
