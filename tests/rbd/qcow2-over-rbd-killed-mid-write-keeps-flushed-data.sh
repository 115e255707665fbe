#!/bin/sh
# Claim: diskserve serving an empty qcow2 in an RBD image, killed with
# SIGKILL while allocating writes are in flight, leaves an image that
# `qemu-img check` (through qemu's own rbd driver) finds free of errors
# (leaked clusters allowed), holding every write a FLUSH had covered and
# zeros where nothing was written (tests/rbd/flush-then-kill.py: rounds
# of writes into fresh 16 KiB slots, each round ending with a FLUSH, the
# kill in a seeded round).  Three images, three seeds; 64 KiB clusters
# and 4 KiB clusters (an L2 table and a refcount block every few
# writes).
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/rbd/rbd-functions.sh"

HELPER="/usr/bin/python3 $abs_top_srcdir/tests/rbd/flush-then-kill.py"
size=$((24 << 20))
i=0
for cluster in 65536 4096 65536; do
    i=$((i + 1))
    name=img$i
    qemu-img create -q -f qcow2 -o cluster_size=$cluster \
        "rbd:rbd/$name:conf=$CEPH_CONF" $size ||
        fail "$name: qemu-img create in RBD"
    ds_start ds-$name -f qcow2 rbd:rbd/$name
    $HELPER run "$DS_URI" "$DS_PID" "$T/$name.json" --seed $((SEED + i)) \
        --rounds 6 || fail "$name: the writing client failed"
    rc=0
    wait "$DS_PID" || rc=$?
    [ $rc = 137 ] || fail "$name: diskserve ended with $rc, not by SIGKILL"

    # Read-only opens need no exclusive lock (the dead server's stays
    # until its watch times out).
    rc=0
    qemu-img check -f qcow2 "rbd:rbd/$name:conf=$CEPH_CONF" \
        >"$T/$name.chk" 2>&1 || rc=$?
    cat "$T/$name.chk"
    case $rc in
    0|3) ;;     # clean, or clusters leaked by the writes cut short
    *) fail "$name: qemu-img check exited $rc" ;;
    esac
    grep -q "corruptions\|ERROR" "$T/$name.chk" &&
        fail "$name: qemu-img check reports corruption"
    qemu-img convert -f qcow2 -O raw "rbd:rbd/$name:conf=$CEPH_CONF" \
        "$T/$name.raw" || fail "$name: qemu-img convert"
    $HELPER verify "$T/$name.raw" "$T/$name.json" ||
        fail "$name: flushed data lost or misplaced (cluster $cluster)"
    rm -f "$T/$name.raw"
    echo "ok: $name (cluster $cluster)"
done
