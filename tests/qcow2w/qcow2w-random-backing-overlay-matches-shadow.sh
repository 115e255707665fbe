#!/bin/sh
# Claim: the random workload on a 4 KiB-cluster overlay over a seeded
# backing file with 64 KiB clusters (partial writes copy backing data
# into new clusters, zero writes must hide it, trims may reveal it) reads
# as predicted and leaves a clean overlay equal to the shadow.
# The workload and its checks: qcow2w-random.sh, qcow2w-random.c.
exec sh "$abs_top_srcdir/tests/qcow2w/qcow2w-random.sh" backing 15000
