#!/bin/sh
# Claim: the random workload on an image with lazy_refcounts=on reads as
# predicted and, once the server has stopped, leaves an image that
# qemu-img check finds clean (no leak, no dirty refcount) and equal to
# the shadow.
# The workload and its checks: qcow2w-random.sh, qcow2w-random.c.
exec sh "$abs_top_srcdir/tests/qcow2w/qcow2w-random.sh" lazy 15000
