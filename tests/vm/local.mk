# tests/vm: guests under qemu (TCG) that boot Debian's kernel from a root
# image diskserve exports and use the kernel's own NBD client against it.
# mkroot.sh builds the initramfs and the root image once into
# tests/vm/cache in the build tree; later runs reuse them.

VM_TESTS = \
	tests/vm/vm-kernel-client-reads-and-writes.sh

TESTS += $(VM_TESTS)
EXTRA_DIST += $(VM_TESTS) \
	tests/vm/vm-functions.sh \
	tests/vm/pattern.sh \
	tests/vm/initramfs-init.sh \
	tests/vm/root-init.sh \
	tests/vm/guest-kernel-client.sh
dist_noinst_SCRIPTS += \
	tests/vm/mkroot.sh \
	tests/vm/unix-relay.py

# The cache's files; "make clean" removes them and the next run rebuilds.
CLEANFILES += \
	tests/vm/cache/stamp \
	tests/vm/cache/kernel \
	tests/vm/cache/initramfs.cpio.gz \
	tests/vm/cache/root.img \
	tests/vm/cache/.lock

# A guest on a qcow2 root served read-write.
VM_QCOW2_TESTS = \
	tests/vm/vm-qcow2-root-converted-image.sh \
	tests/vm/vm-qcow2-root-overlay-on-backing-file.sh
TESTS += $(VM_QCOW2_TESTS)
EXTRA_DIST += $(VM_QCOW2_TESTS) \
	tests/vm/vm-qcow2-root-functions.sh \
	tests/vm/guest-qcow2-root.sh
