#!/bin/sh
# mkroot.sh OUTDIR: build the boot files of the VM tests into OUTDIR, or
# keep them when they are up to date.  No privileges are used: no mount, no
# loop device, no mknod.  Outputs:
#
#   OUTDIR/kernel              path of Debian's kernel (a line of text)
#   OUTDIR/initramfs.cpio.gz   busybox, the virtio and ext4 modules and
#                              initramfs-init.sh as /init
#   OUTDIR/root.img            raw ext4 image: busybox with its applet
#                              links, nbd-client with the libraries ldd
#                              names, the nbd and virtio_net modules,
#                              root-init.sh as /init, pattern.sh and the
#                              guest-*.sh scripts under /ds
#
# root.img is a plain raw file system with no partition table, so a test
# may serve it as is or convert it (qemu-img convert -O qcow2) and serve
# that.  OUTDIR/stamp records what the files were built from (these
# scripts, the kernel, busybox, nbd-client); a mismatch rebuilds them.
# Concurrent callers serialise on OUTDIR/.lock.
#
# DSVM_KVER picks the kernel version; by default the newest
# /boot/vmlinuz-VERSION that has /lib/modules/VERSION.

set -eu

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
out=$1
busybox=$(command -v busybox) || { echo "mkroot: no busybox" >&2; exit 1; }
nbdclient=$(command -v nbd-client) ||
    { echo "mkroot: no nbd-client" >&2; exit 1; }

# Modules the initramfs loads to reach the root disk, and those the root
# file system loads for the guest scripts.  Dependencies are added from
# modules.dep.  ext4 and jbd2 want crc32c through the crypto API, which
# only a soft dependency names, hence crc32c_generic.
initramfs_modules="virtio_pci virtio_blk crc32c_generic ext4"
root_modules="virtio_net nbd"

if [ -z "${DSVM_KVER:-}" ]; then
    for k in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V); do
        v=${k#/boot/vmlinuz-}
        [ -f "/lib/modules/$v/modules.dep" ] && DSVM_KVER=$v
    done
fi
[ -n "${DSVM_KVER:-}" ] ||
    { echo "mkroot: no /boot/vmlinuz-* with its modules" >&2; exit 1; }
kernel=/boot/vmlinuz-$DSVM_KVER
moddir=/lib/modules/$DSVM_KVER
[ -r "$kernel" ] || { echo "mkroot: cannot read $kernel" >&2; exit 1; }

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

stamp=$( (
    cat "$here/mkroot.sh" "$here/initramfs-init.sh" "$here/root-init.sh" \
        "$here/pattern.sh" "$here"/guest-*.sh
    echo "$kernel $initramfs_modules $root_modules"
    ls -lL --time-style=+%s "$kernel" "$moddir/modules.dep" "$busybox" \
        "$nbdclient"
) | sha256sum)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] &&
    [ -f "$out/root.img" ] && [ -f "$out/initramfs.cpio.gz" ]; then
    exit 0
fi

work=$(mktemp -d "$out/tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Path of module NAME relative to $moddir, as modules.dep spells it.
module_path()
{
    _mp_re=$(echo "$1" | sed 's/[-_]/[-_]/g')
    _mp=$(grep -E "^[^:]*/$_mp_re\\.ko(\\.xz|\\.zst|\\.gz)?:" \
        "$moddir/modules.dep" | cut -d: -f1)
    [ -n "$_mp" ] || { echo "mkroot: no module $1 in $moddir" >&2; exit 1; }
    echo "$_mp"
}

# Copy module file REL into DIR/lib/modules, dependencies first, each one
# once across both images ($loaded), and append its name to load-order.
loaded=" "
add_module()
{
    case $loaded in *" $2 "*) return 0 ;; esac
    for dep in $(grep "^$2:" "$moddir/modules.dep" | cut -d: -f2); do
        add_module "$1" "$dep"
    done
    _am_name=$(basename "$2")
    _am_name=${_am_name%%.ko*}
    case $2 in
        *.ko.xz) xz -dc "$moddir/$2" ;;
        *.ko.zst) zstd -qdc "$moddir/$2" ;;
        *.ko.gz) gzip -dc "$moddir/$2" ;;
        *) cat "$moddir/$2" ;;
    esac >"$1/lib/modules/$_am_name.ko"
    echo "$_am_name" >>"$1/lib/modules/load-order"
    loaded="$loaded$2 "
}

# A busybox tree in DIR: the static binary and a link for each applet.
add_busybox()
{
    mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin" "$1/lib/modules" \
        "$1/dev" "$1/proc" "$1/sys" "$1/tmp"
    : >"$1/lib/modules/load-order"
    cp "$busybox" "$1/bin/busybox"
    for applet in $("$busybox" --list-full); do
        [ -e "$1/$applet" ] || ln -s /bin/busybox "$1/$applet"
    done
}

if ldd "$busybox" >/dev/null 2>&1; then
    echo "mkroot: $busybox is not static (install busybox-static)" >&2
    exit 1
fi

# The initramfs.
init=$work/initramfs
add_busybox "$init"
for m in $initramfs_modules; do
    path=$(module_path "$m")
    add_module "$init" "$path"
done
cp "$here/initramfs-init.sh" "$init/init"
chmod 755 "$init/init"
(cd "$init" && find . | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$work/initramfs.cpio.gz"

# The root file system.
root=$work/root
add_busybox "$root"
for m in $root_modules; do
    path=$(module_path "$m")
    add_module "$root" "$path"
done
cp "$nbdclient" "$root/sbin/nbd-client"
for lib in $(ldd "$nbdclient" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }
                                   $1 ~ /^\// { print $1 }'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
mkdir -p "$root/ds" "$root/etc"
cp "$here/root-init.sh" "$root/init"
chmod 755 "$root/init"
cp "$here/pattern.sh" "$here"/guest-*.sh "$root/ds/"
echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
truncate -s 32M "$work/root.img"
mkfs.ext4 -q -F -L dsvm-root -E root_owner=0:0 -d "$root" "$work/root.img"

echo "$kernel" >"$work/kernel"
mv -f "$work/kernel" "$work/initramfs.cpio.gz" "$work/root.img" "$out/"
echo "$stamp" >"$out/stamp"
