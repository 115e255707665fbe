#!/bin/bash
# Linux's own NBD client reads and writes a diskserve export, inside a
# guest that boots from diskserve.
#
# Two servers: one exports the cached root image read-only, and qemu's NBD
# block driver makes it the guest's /dev/vda, so the guest's whole root
# file system (its /init, busybox, nbd-client and its libraries, the nbd
# module) is read through diskserve.  The other exports an 8 MiB data
# image holding a known pattern, under the name "data"; qemu's user
# networking forwards the guest's connections to 10.0.2.100:10809 to its
# Unix socket through unix-relay.py.  In the guest,
# nbd-client attaches the export as /dev/nbd0 and the kernel's nbd driver
# checks the size and the sums of the first MiB and of the whole device,
# writes a seeded pattern with O_DIRECT (4 KiB aligned) and another through
# the page cache with fsync (512-byte aligned, so the kernel sends a flush),
# reads both back and disconnects (see guest-kernel-client.sh).
#
# Here: the guest's success line proves the boot and the guest's checks;
# then the data image must equal the original with exactly those two ranges
# replaced, byte for byte.  DSVM_SEED=N replays a run.

. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vm/vm-functions.sh"

require /usr/bin/python3
vm_prepare

seed=${DSVM_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed=$seed (replay with DSVM_SEED=$seed)"
# Both ranges come from the seed's digits in mixed radix: O_DIRECT from
# [1 MiB, 3 MiB), 32 to 128 KiB; buffered from [5 MiB, 7 MiB), 0.5 to
# 7.5 KiB, 512-aligned and so usually not page-aligned.
size=$((8 * 1024 * 1024))
direct_off=$((4096 * (256 + seed % 512)))
direct_len=$((4096 * (8 + seed / 512 % 25)))
buffered_off=$((512 * (10240 + seed / 12800 % 4096)))
buffered_len=$((512 * (1 + seed / 52428800 % 15)))
echo "O_DIRECT write: $direct_len bytes at $direct_off;" \
    "buffered write: $buffered_len bytes at $buffered_off"

vm_pattern base 0 $((size / 512)) >"$T/data.img"
cp "$T/data.img" "$T/expected.img"
sum_1m=$(head -c 1048576 "$T/data.img" | sha256sum | cut -d' ' -f1)
sum_all=$(sha256sum <"$T/data.img" | cut -d' ' -f1)

ds_start root -r -f raw "$VM_ROOT"
root_pid=$DS_PID
root_uri=$DS_URI
ds_start data -f raw -x data "$T/data.img"
data_pid=$DS_PID
data_sock=$DS_SOCK

relay="/usr/bin/python3 $abs_top_srcdir/tests/vm/unix-relay.py"
guestfwd="tcp:10.0.2.100:10809-cmd:$relay $data_sock $T/relay.log"
append="ds.run=kernel-client ds.server=10.0.2.100 ds.port=10809"
append="$append ds.export=data ds.size=$size"
append="$append ds.sum_1m=$sum_1m ds.sum_all=$sum_all ds.seed=$seed"
append="$append ds.direct_off=$direct_off ds.direct_len=$direct_len"
append="$append ds.buffered_off=$buffered_off ds.buffered_len=$buffered_len"
vm_boot "$T/console.log" "$append" \
    -drive "file=$root_uri,format=raw,if=virtio,readonly=on" \
    -netdev "user,id=net0,restrict=on,guestfwd=$guestfwd" \
    -device virtio-net-pci,netdev=net0,romfile=
vm_check "$T/console.log" "DSVM-PASS kernel-client seed=$seed"

kill -0 "$root_pid" 2>/dev/null || fail "the root image's server died"
kill -0 "$data_pid" 2>/dev/null || fail "the data image's server died"
ds_stop "$data_pid" || fail "the data image's server exited with status $?"

vm_pattern "$seed" $((direct_off / 512)) $((direct_len / 512)) |
    dd of="$T/expected.img" bs=512 seek=$((direct_off / 512)) \
        conv=notrunc status=none
vm_pattern "$seed" $((buffered_off / 512)) $((buffered_len / 512)) |
    dd of="$T/expected.img" bs=512 seek=$((buffered_off / 512)) \
        conv=notrunc status=none
cmp "$T/expected.img" "$T/data.img" ||
    fail "the data image does not hold exactly what the guest wrote"
echo "the guest booted from diskserve and its writes landed exactly"
