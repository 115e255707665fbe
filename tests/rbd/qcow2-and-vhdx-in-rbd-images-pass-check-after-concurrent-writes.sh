#!/bin/sh
# Claim: a qcow2 file and a VHDX file made locally by qemu-img and
# imported into RBD images (`rbd import`, so each image is as small as
# the file) are served from the images by diskserve -f qcow2 / -f vhdx,
# take a random concurrent workload from three connections (writes that
# allocate, zero writes, trims, flushes, FUA; eight requests in flight
# each) growing the images as a file would grow, and afterwards
# `rbd export` of each is an image qemu-img check finds clean and
# qemu-img compare reads as the clients' shadow, and so does qemu's own
# rbd driver reading the image in place.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/rbd/rbd-functions.sh"

size=$((32 << 20))
for fmt in qcow2 vhdx; do
    qemu-img create -q -f $fmt "$T/local.$fmt" $size
    rbd import "$T/local.$fmt" rbd/$fmt >/dev/null 2>&1 ||
        fail "$fmt: rbd import"
    before=$(rbd info rbd/$fmt --format json |
             /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')
    truncate -s $size "$T/$fmt.shadow"
    ds_start ds-$fmt -f $fmt rbd:rbd/$fmt
    rbd_workload $fmt "$DS_URI" $size 3 "$T/$fmt.shadow" --ops 250 \
        --inflight 8 --hot $((1 << 20)) --max-len $((192 << 10))
    ds_stop "$DS_PID" || fail "$fmt: diskserve exited with an error"
    after=$(rbd info rbd/$fmt --format json |
            /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')
    [ "$after" -gt "$before" ] ||
        fail "$fmt: the image did not grow ($before -> $after bytes)"

    rbd export rbd/$fmt "$T/$fmt.export" >/dev/null 2>&1 ||
        fail "$fmt: rbd export"
    qemu-img check -f $fmt "$T/$fmt.export" >"$T/$fmt.chk" 2>&1 || {
        cat "$T/$fmt.chk" >&2
        fail "$fmt: qemu-img check of the exported image"
    }
    qemu-img compare -f $fmt -F raw "$T/$fmt.export" "$T/$fmt.shadow" ||
        fail "$fmt: the exported image reads otherwise than the shadow"
    qemu-img compare -f $fmt -F raw "rbd:rbd/$fmt:conf=$CEPH_CONF" \
        "$T/$fmt.shadow" ||
        fail "$fmt: qemu's rbd driver reads otherwise than the shadow"
    echo "ok: $fmt (image $before -> $after bytes)"
    rm -f "$T/$fmt.export" "$T/$fmt.shadow"
done
