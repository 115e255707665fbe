#!/bin/sh
# Claim: the random workload on an image made by qemu-img convert -c, two
# thirds of its clusters compressed (partial writes decompress and
# reallocate them, trims and zero writes free them), reads as predicted
# and leaves a clean image equal to the shadow.
# The workload and its checks: qcow2w-random.sh, qcow2w-random.c.
exec sh "$abs_top_srcdir/tests/qcow2w/qcow2w-random.sh" compressed 15000
