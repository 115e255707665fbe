# Helpers for the VM tests.  Source after tests/functions.sh:
#   . "$abs_top_srcdir/tests/vm/vm-functions.sh"
#
# A VM test boots Debian's kernel under qemu (TCG, no KVM needed) with the
# initramfs and root image from mkroot.sh, cached in $VM_CACHE so that only
# the first run pays for building them.  The root disk is an NBD export of
# a server the test started; the guest runs /ds/guest-$RUN.sh from it and
# reports on the serial console, which goes to a file.

VM_CACHE=${VM_CACHE:-$abs_top_builddir/tests/vm/cache}
VM_TIMEOUT=${VM_TIMEOUT:-90}

. "$abs_top_srcdir/tests/vm/pattern.sh"

# vm_prepare: skip when a tool or the kernel is missing, then build or
# reuse the boot files.  Sets VM_KERNEL, VM_INITRD and VM_ROOT (raw ext4).
vm_prepare()
{
    require qemu-system-x86_64 busybox nbd-client mkfs.ext4 cpio gzip flock
    if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
        echo "SKIP: no /boot/vmlinuz-* (install linux-image-amd64)" >&2
        exit 77
    fi
    "$abs_top_srcdir/tests/vm/mkroot.sh" "$VM_CACHE" ||
        fail "mkroot.sh could not build the boot files in $VM_CACHE"
    VM_KERNEL=$(cat "$VM_CACHE/kernel")
    VM_INITRD=$VM_CACHE/initramfs.cpio.gz
    VM_ROOT=$VM_CACHE/root.img
}

# vm_boot LOG APPEND [QEMU-OPTION...]: boot the guest with kernel command
# line "console=ttyS0 panic=-1 APPEND", its serial console in LOG, and the
# extra qemu options (the root disk as the first virtio disk, networking).
# The guest powers off when its script ends; fail if qemu fails or the
# guest is still running after $VM_TIMEOUT seconds.
vm_boot()
{
    local log=$1 append=$2 rc=0
    shift 2
    timeout -k 5 "$VM_TIMEOUT" qemu-system-x86_64 \
        -nodefaults -no-user-config -display none -accel tcg \
        -m 512 -no-reboot \
        -kernel "$VM_KERNEL" -initrd "$VM_INITRD" \
        -append "console=ttyS0 panic=-1 $append" \
        -serial "file:$log" "$@" >"$log.qemu" 2>&1 || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        vm_show_log "$log"
        fail "the guest was still running after $VM_TIMEOUT s"
    fi
    if [ "$rc" -ne 0 ]; then
        cat "$log.qemu" >&2
        vm_show_log "$log"
        fail "qemu-system-x86_64 exited with status $rc"
    fi
}

# vm_show_log LOG: copy the end of a serial log to stderr (the test log),
# and the other non-empty logs in $T (servers, relay).
vm_show_log()
{
    local f
    echo "--- last lines of the guest's console ($1) ---" >&2
    tail -n 60 "$1" >&2 || true
    for f in "$T"/*.log; do
        if [ "$f" != "$1" ] && [ -s "$f" ]; then
            echo "--- $f ---" >&2
            tail -n 20 "$f" >&2
        fi
    done
    echo "--- end of logs ---" >&2
}

# vm_check LOG MARKER: fail unless the guest printed the line MARKER and
# its script exited 0.  The console ends its lines with CR LF.
vm_check()
{
    tr -d '\r' <"$1" >"$1.txt"
    if ! grep -qxF "$2" "$1.txt" || ! grep -qxF "DSVM-EXIT 0" "$1.txt"; then
        vm_show_log "$1"
        fail "the guest did not report '$2'"
    fi
}
