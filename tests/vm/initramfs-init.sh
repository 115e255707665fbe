#!/bin/sh
# /init of the VM tests' initramfs (built by mkroot.sh).  Debian's kernel
# has virtio and ext4 as modules, so this loads them, mounts the root disk
# /dev/vda (the NBD export qemu reads from the server under test) and hands
# over to the root filesystem's own /init.  Read-only unless the kernel
# command line says ds.rootmode=rw.
#
# The archive holds no device nodes (it is built without privileges), so
# the kernel starts us with no console: mount devtmpfs and reopen it first.

PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH

mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

die()
{
    echo "DSVM-FAIL initramfs: $*"
    poweroff -f
    sleep 10
}

mount -t proc proc /proc || die "cannot mount /proc"
mount -t sysfs sysfs /sys || die "cannot mount /sys"

while read -r mod; do
    insmod "/lib/modules/$mod.ko" || die "insmod $mod failed"
done </lib/modules/load-order

n=0
while [ ! -b /dev/vda ]; do
    n=$((n + 1))
    [ "$n" -le 100 ] || die "no /dev/vda after 10 s"
    sleep 0.1
done

mode=ro
for word in $(cat /proc/cmdline); do
    case $word in
        ds.rootmode=rw) mode=rw ;;
    esac
done

mkdir -p /newroot
mount -t ext4 -o "$mode" /dev/vda /newroot || die "cannot mount /dev/vda"
for fs in dev proc sys; do
    mount --move "/$fs" "/newroot/$fs" || die "cannot move /$fs"
done
echo "DSVM: root filesystem mounted $mode from /dev/vda"
exec switch_root /newroot /init
die "switch_root failed"
