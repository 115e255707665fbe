#!/bin/sh
# Claim: a guest boots from a qcow2 root that diskserve serves
# read-write (root.img converted with qemu-img convert -O qcow2), and
# the files it writes, copies, partly overwrites and deletes land in the
# image: qemu-img check finds it clean, e2fsck finds its file system
# clean, and every file the guest left, read on the host with debugfs,
# has the sha256 the guest printed.  See vm-qcow2-root-functions.sh and
# guest-qcow2-root.sh.  DSVM_SEED=N replays a run.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vm/vm-functions.sh"
. "$abs_top_srcdir/tests/vm/vm-qcow2-root-functions.sh"

vm_prepare
qemu-img convert -f raw -O qcow2 "$VM_ROOT" "$T/root.qcow2" ||
    fail "cannot convert $VM_ROOT to qcow2"
qr_boot_and_check "$T/root.qcow2"
echo "the guest's files landed in the qcow2 root"
