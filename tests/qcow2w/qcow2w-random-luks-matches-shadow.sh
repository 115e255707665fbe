#!/bin/sh
# Claim: the random workload on a LUKS-encrypted qcow2 with 4 KiB
# clusters (--key-file) reads as predicted and leaves an image that
# qemu-img check finds clean and that decrypts to the shadow.
# The workload and its checks: qcow2w-random.sh, qcow2w-random.c.
exec sh "$abs_top_srcdir/tests/qcow2w/qcow2w-random.sh" luks 15000
