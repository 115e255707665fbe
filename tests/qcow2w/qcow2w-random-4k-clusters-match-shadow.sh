#!/bin/sh
# Claim: the random workload (see qcow2w-random-64k-clusters-match-
# shadow.sh) on 4 KiB clusters, where it allocates dozens of L2 tables
# and refcount blocks, reads as predicted and leaves a clean image equal
# to the shadow.
# The workload and its checks: qcow2w-random.sh, qcow2w-random.c.
exec sh "$abs_top_srcdir/tests/qcow2w/qcow2w-random.sh" 4k 15000
