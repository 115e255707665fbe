# Helpers for the vm-qcow2-root-*.sh tests: boot the guest from a qcow2
# root served read-write, then judge the image on the host.  Source after
# tests/functions.sh and tests/vm/vm-functions.sh.
#
# The guest (guest-qcow2-root.sh) prints the sha256 of each file it
# leaves; here the image must check clean with qemu-img check, its file
# system clean with e2fsck, and each file, dumped from the image with
# debugfs (no mount), must have the guest's sum.
#
# The server under test is diskserve; DS_TEST_SERVER=qemu-nbd boots from
# qemu-nbd instead.

. "$abs_top_srcdir/tests/qcow2w/qcow2w-functions.sh"
require e2fsck debugfs

# qr_boot_and_check IMAGE: serve IMAGE (qcow2) read-write, boot from it
# with the root mounted read-write, and check the image and the files.
qr_boot_and_check()
{
    local img=$1 seed name sum got
    seed=${DSVM_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
    echo "seed=$seed (replay with DSVM_SEED=$seed)"

    qw_serve root "$img"
    vm_boot "$T/console.log" \
        "ds.run=qcow2-root ds.rootmode=rw ds.seed=$seed" \
        -drive "file=$QW_URI,format=raw,if=virtio,cache=writeback"
    vm_check "$T/console.log" "DSVM-PASS qcow2-root seed=$seed"
    kill -0 "$QW_PID" 2>/dev/null || fail "the root image's server died"
    qw_stop root
    qw_check root "$img"

    qemu-img convert -f qcow2 -O raw "$img" "$T/root.raw" ||
        fail "qemu-img convert of the root image"
    e2fsck -fn "$T/root.raw" >"$T/e2fsck.out" 2>&1 || {
        cat "$T/e2fsck.out" >&2
        fail "e2fsck finds the root file system damaged"
    }
    grep '^DSVM-SUM ' "$T/console.log.txt" >"$T/sums"
    [ "$(wc -l <"$T/sums")" -eq 6 ] || {
        vm_show_log "$T/console.log"
        fail "the guest printed $(wc -l <"$T/sums") sums, expected 6"
    }
    while read -r _ name sum; do
        rm -f "$T/dumped"
        debugfs -R "dump $name $T/dumped" "$T/root.raw" >/dev/null 2>&1
        [ -f "$T/dumped" ] || fail "$name is not in the image"
        got=$(sha256sum <"$T/dumped" | cut -d' ' -f1)
        [ "$got" = "$sum" ] ||
            fail "$name reads back with sha256 $got, the guest wrote $sum"
        echo "ok: $name ($(stat -c %s "$T/dumped") bytes)"
    done <"$T/sums"
    debugfs -R "stat /qw/doomed" "$T/root.raw" 2>&1 |
        grep -q "not found" || fail "/qw/doomed, deleted, is still there"
    rm -f "$T/root.raw" "$T/dumped"
}
