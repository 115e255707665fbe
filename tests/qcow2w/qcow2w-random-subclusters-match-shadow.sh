#!/bin/sh
# Claim: the random workload on extended L2 entries (32 KiB clusters of
# 1 KiB subclusters), where most writes and zero writes cover parts of
# subclusters, reads as predicted and leaves a clean image equal to the
# shadow.
# The workload and its checks: qcow2w-random.sh, qcow2w-random.c.
exec sh "$abs_top_srcdir/tests/qcow2w/qcow2w-random.sh" subclusters 15000
