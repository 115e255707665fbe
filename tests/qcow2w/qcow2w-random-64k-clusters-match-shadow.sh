#!/bin/sh
# Claim: 15,000 random reads, writes, zero writes, trims and flushes from
# four connections, 64 in flight, on a qcow2 with 64 KiB clusters, read
# back what a shadow copy predicts, and leave an image that qemu-img
# check finds clean and qemu-img compare finds equal to the shadow.
# The workload and its checks: qcow2w-random.sh, qcow2w-random.c.
exec sh "$abs_top_srcdir/tests/qcow2w/qcow2w-random.sh" 64k 15000
