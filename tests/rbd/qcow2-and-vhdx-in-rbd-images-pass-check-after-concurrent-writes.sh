#!/bin/sh
# Claim: a qcow2 file and a VHDX file made locally by qemu-img and
# imported into RBD images (`rbd import`, so each image is as small as
# the file) are served from the images by diskserve -f qcow2 / -f vhdx,
# take a random concurrent workload from three connections (writes that
# allocate, zero writes, trims, flushes, FUA; eight requests in flight
# each) growing the images as a file would grow, and afterwards
# `rbd export` of each is an image qemu-img check finds clean and
# qemu-img compare reads as the clients' shadow, and so does qemu's own
# rbd driver reading the image in place; diskserve-img info and check
# read it in place as well (virtual size as qemu-img's, no errors), and
# a leak poked into a copy of the qcow2 is found and repaired in place.
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
    # diskserve-img reads the image in place too: info gives the
    # virtual size qemu-img gives, check finds it clean.
    want=$(qemu-img info --output json -f $fmt "rbd:rbd/$fmt:conf=$CEPH_CONF" |
           /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    "$DISKSERVE_IMG" info --output json "rbd:rbd/$fmt:conf=$CEPH_CONF" \
        >"$T/$fmt.info" || fail "$fmt: diskserve-img info of the RBD image"
    got=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["virtual-size"])' "$T/$fmt.info")
    [ "$got" = "$want" ] ||
        fail "$fmt: diskserve-img info says $got bytes, qemu-img $want"
    "$DISKSERVE_IMG" check "rbd:rbd/$fmt:conf=$CEPH_CONF" >"$T/$fmt.dchk" 2>&1 || {
        cat "$T/$fmt.dchk" >&2
        fail "$fmt: diskserve-img check of the RBD image"
    }
    grep -q "No errors were found" "$T/$fmt.dchk" ||
        { cat "$T/$fmt.dchk" >&2; fail "$fmt: diskserve-img check output"; }
    if [ $fmt = qcow2 ]; then
        # A leak (the header cluster's refcount bumped to 2) in an RBD
        # image: check finds it (exit 3), -r leaks repairs it in place,
        # and qemu-img check then finds the image clean.
        /usr/bin/python3 "$abs_top_srcdir/tests/img/imgpoke.py" \
            "$T/$fmt.export" refcount 0 2 >/dev/null || fail "poking a leak"
        rbd import "$T/$fmt.export" rbd/leaky >/dev/null 2>&1 ||
            fail "rbd import of the leaky image"
        leaky="rbd:rbd/leaky:conf=$CEPH_CONF"
        rc=0
        "$DISKSERVE_IMG" check "$leaky" >"$T/leak.out" 2>&1 || rc=$?
        [ $rc = 3 ] || { cat "$T/leak.out" >&2;
                         fail "check of a leaky RBD image: exit $rc, not 3"; }
        "$DISKSERVE_IMG" check -r leaks "$leaky" >"$T/repair.out" 2>&1 || {
            cat "$T/repair.out" >&2
            fail "check -r leaks of the RBD image"
        }
        grep -q "1 leaked clusters" "$T/repair.out" ||
            { cat "$T/repair.out" >&2; fail "the repair did not count the leak"; }
        qemu-img check -f qcow2 "$leaky" >"$T/after.chk" 2>&1 || {
            cat "$T/after.chk" >&2
            fail "qemu-img check after diskserve-img repaired the RBD image"
        }
        echo "ok: a leak in an RBD image found and repaired in place"
    fi
    echo "ok: $fmt (image $before -> $after bytes)"
    rm -f "$T/$fmt.export" "$T/$fmt.shadow"
done
