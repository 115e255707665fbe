#!/bin/sh
# Claim: a guest boots from a qcow2 overlay (qemu-img create -b
# root.qcow2 -F qcow2) that diskserve serves read-write, its writes land
# in the overlay only: the overlay checks clean, its file system is clean,
# every file the guest left reads back on the host (debugfs) with the
# sha256 the guest printed, and the backing file is unchanged.  See
# vm-qcow2-root-functions.sh and guest-qcow2-root.sh.  DSVM_SEED=N
# replays a run.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vm/vm-functions.sh"
. "$abs_top_srcdir/tests/vm/vm-qcow2-root-functions.sh"

vm_prepare
qemu-img convert -f raw -O qcow2 "$VM_ROOT" "$T/base.qcow2" ||
    fail "cannot convert $VM_ROOT to qcow2"
base_sum=$(sha256sum <"$T/base.qcow2")
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 \
    "$T/overlay.qcow2" || fail "cannot create the overlay"
qr_boot_and_check "$T/overlay.qcow2"
[ "$(sha256sum <"$T/base.qcow2")" = "$base_sum" ] ||
    fail "the backing file changed"
qemu-img compare -q -f raw -F qcow2 "$VM_ROOT" "$T/base.qcow2" ||
    fail "the backing file no longer reads as root.img"
echo "the backing file is unchanged"
