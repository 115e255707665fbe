#!/bin/sh
# A dynamic VHDX file with 1 MiB blocks survives every crash state of a
# seeded workload that allocates blocks, zeroes and trims whole blocks
# and parts of them, and flushes (FLUSH and FUA), with torn 512 B and
# 4 KiB pieces of header, log and BAT writes: every state opens in
# diskserve (replaying its log into the file), passes qemu-img check
# (on a copy, after QEMU's own replay), holds acknowledged-or-later
# values, and takes a write and flush and checks again (crash-check).
# At least 3,000 states.  Then the same for a file with 4096-byte
# logical sectors made by diskserve-img, with requests whole sectors
# (a client that agreed to the minimum block size): at least 250
# states, without qemu-img check, since QEMU refuses such files.
# CRASH_SEED=N replays a seed.
set -eu
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
sh "$abs_top_srcdir/tests/crash/run-crash.sh" \
    --requests 150 --min-states 3000 \
    --workload-arg --hot=0.3 --workload-arg --big=0.2 \
    --workload-arg --big-sectors=4096 \
    vhdx "$seed" 3000 \
    qemu-img create -q -f vhdx -o block_size=1M IMG 4M
exec sh "$abs_top_srcdir/tests/crash/run-crash.sh" \
    --requests 60 --min-states 250 --no-qemu --align 8 \
    --workload-arg --hot=0.3 --workload-arg --big=0.2 \
    --workload-arg --big-sectors=4096 \
    vhdx "$seed" 300 \
    "$abs_top_builddir/diskserve-img" create -q -f vhdx \
    -o block_size=1M,logical_sector_size=4096 IMG 4M
