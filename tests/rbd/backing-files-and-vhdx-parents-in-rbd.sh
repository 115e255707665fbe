#!/bin/sh
# Claim: qcow2 backing files and VHDX parents may be RBD images.
# - A qcow2 child in RBD whose backing file is `rbd:rbd/base` (no conf
#   option: it takes the child's) reads as the base, takes writes, and
#   qemu reading the chain through its own rbd driver sees what the
#   export shows; a second child naming its backing file relatively
#   (`base`, the image of that name in the child's pool) reads the same.
#   diskserve has no CEPH_CONF in its environment here: the backing
#   image is found through the child's :conf= option.
# - A VHDX chain imported into RBD (a child made by diskserve-img -b,
#   relative_path pointing at its parent) is served from the child's
#   RBD image with the parent found beside it, reading as the same chain
#   served from the local files.
# - A qcow2 image in RBD naming itself as backing file, and one naming
#   an absolute local path, are refused with one line each.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/rbd/rbd-functions.sh"

size=$((8 << 20))
/usr/bin/python3 -c '
import random, sys
sys.stdout.buffer.write(random.Random(int(sys.argv[1])).randbytes(int(sys.argv[2])))
' "$SEED" $size >"$T/base.raw"
rbd import "$T/base.raw" rbd/base >/dev/null 2>&1 || fail "rbd import base"
conf=":conf=$CEPH_CONF"

# qcow2 children, backing named absolutely and relatively (-u: written
# as given, not opened by qemu-img).
qemu-img create -q -f qcow2 -u -b rbd:rbd/base -F raw "rbd:rbd/child$conf" \
    $size || fail "qemu-img create child"
qemu-img create -q -f qcow2 -u -b base -F raw "rbd:rbd/rel$conf" $size ||
    fail "qemu-img create rel"
# diskserve runs without CEPH_CONF in its environment: only the conf
# option of the child's name tells it where the cluster is.
ds_noenv()
{
    unset CEPH_CONF
    ds_start "$@"
    CEPH_CONF=$CEPH_DIR/ceph.conf
    export CEPH_CONF
}
ds_noenv child -f qcow2 "rbd:rbd/child$conf"
child=$DS_URI
child_pid=$DS_PID
qemu-img compare -f raw -F raw "$child" "$T/base.raw" ||
    fail "the qcow2 child in RBD does not read as its RBD backing file"
qemu-io -f raw -c "write -P 0x5a 1M 64k" -c "write -P 0x5b 5M 1M" -c flush \
    "$child" >/dev/null || fail "writes to the qcow2 child"
cp "$T/base.raw" "$T/expect.raw"
/usr/bin/python3 - "$T/expect.raw" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(1 << 20); f.write(b"\x5a" * 65536)
    f.seek(5 << 20); f.write(b"\x5b" * (1 << 20))
PY
qemu-img compare -f raw -F raw "$child" "$T/expect.raw" ||
    fail "the qcow2 child reads otherwise than base plus its writes"
ds_stop "$child_pid" || fail "the child's server exited with an error"
qemu-img compare -f qcow2 -F raw "rbd:rbd/child$conf" "$T/expect.raw" ||
    fail "qemu reads the qcow2 chain in RBD otherwise"
qemu-img check -f qcow2 "rbd:rbd/child$conf" >/dev/null ||
    fail "qemu-img check of the qcow2 child in RBD"
ds_noenv rel -f qcow2 "rbd:rbd/rel$conf"
qemu-img compare -f raw -F raw "$DS_URI" "$T/base.raw" ||
    fail "a relative backing name of an RBD child is not its pool's image"
ds_stop "$DS_PID" || fail "the rel server exited with an error"
echo "ok: qcow2 children of an RBD base"

# A VHDX chain: made locally, imported, served from RBD.
"$DISKSERVE_IMG" create -q -f vhdx -o block_size=1M "$T/base.vhdx" $size ||
    fail "diskserve-img create base.vhdx"
ds_start vbase -f vhdx "$T/base.vhdx"
qemu-img convert -n -f raw -O raw "$T/base.raw" "$DS_URI" ||
    fail "filling base.vhdx"
ds_stop "$DS_PID" || fail "the base.vhdx server exited with an error"
(cd "$T" && "$DISKSERVE_IMG" create -q -f vhdx -b base.vhdx child.vhdx) ||
    fail "diskserve-img create -b base.vhdx"
ds_start vchild -f vhdx "$T/child.vhdx"
qemu-io -f raw -c "write -P 0x6c 2M 512k" -c "write -P 0x6d 7M 4096" \
    -c flush "$DS_URI" >/dev/null || fail "writes to the local VHDX child"
qemu-img convert -f raw -O raw "$DS_URI" "$T/vchild.raw"
ds_stop "$DS_PID" || fail "the local VHDX child's server exited with an error"
rbd import "$T/base.vhdx" rbd/base.vhdx >/dev/null 2>&1 ||
    fail "rbd import base.vhdx"
rbd import "$T/child.vhdx" rbd/child.vhdx >/dev/null 2>&1 ||
    fail "rbd import child.vhdx"
ds_noenv rvchild -r -f vhdx "rbd:rbd/child.vhdx$conf"
qemu-img compare -f raw -F raw "$DS_URI" "$T/vchild.raw" ||
    fail "the VHDX chain in RBD reads otherwise than from local files"
nbdinfo --map=qemu:allocation-depth "$DS_URI" >"$T/depth.map" ||
    fail "allocation depth of the VHDX chain in RBD"
grep -q "local" "$T/depth.map" && grep -q "backing depth 2" "$T/depth.map" ||
    { cat "$T/depth.map" >&2; fail "allocation depth misses a level"; }
ds_stop "$DS_PID" || fail "the RBD VHDX server exited with an error"
echo "ok: a VHDX chain in RBD"

# Refused: a loop, and an absolute local path named by an RBD image.
qemu-img create -q -f qcow2 -u -b rbd:rbd/loop -F qcow2 "rbd:rbd/loop$conf" \
    $size || fail "qemu-img create loop"
qemu-img create -q -f qcow2 -u -b /nonexistent/base.raw -F raw \
    "rbd:rbd/abs$conf" $size || fail "qemu-img create abs"
for x in "loop:loops back to an image already in the chain" \
         "abs:must be an RBD image or a relative name"; do
    name=${x%%:*}
    rc=0
    timeout 60 "$DISKSERVE" -k "$T/$name.sock" -f qcow2 "rbd:rbd/$name$conf" \
        >"$T/$name.log" 2>&1 || rc=$?
    [ $rc = 1 ] && [ "$(wc -l <"$T/$name.log")" = 1 ] &&
        grep -q "${x#*:}" "$T/$name.log" || {
        cat "$T/$name.log" >&2
        fail "$name: exit $rc, not one line naming the cause"
    }
    echo "  $(cat "$T/$name.log")"
done
echo ok
