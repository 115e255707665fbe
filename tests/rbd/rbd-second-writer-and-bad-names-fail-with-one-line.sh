#!/bin/sh
# Claim: while one diskserve writes an RBD image (exclusive-lock
# feature), a second diskserve asked to write the same image exits 1 at
# once with one line that names the image and its lock holder, and the
# first keeps serving its writes; read-only, the second may serve it.
# Names that cannot be opened (no such pool, image or snapshot, an
# unreadable conf file, a user the cluster does not know, a malformed
# name, a monitor nobody answers at) each make diskserve exit 1 with one
# line naming the image and the cause (and the conf file, when the
# cluster cannot be reached).  --fork with an RBD image is refused as a
# usage error (exit 2): librados does not survive the fork.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/rbd/rbd-functions.sh"

rbd create --size 8M rbd/img
rbd info rbd/img | grep -q exclusive-lock || fail "no exclusive-lock feature"
ds_start first -f raw rbd:rbd/img
first=$DS_URI
qemu-io -f raw -c "write -P 0x31 0 1M" "$first" >/dev/null ||
    fail "write through the first server"

# one_line LOG PATTERN: LOG is exactly one line and matches PATTERN.
one_line()
{
    [ "$(wc -l <"$1")" = 1 ] || { cat "$1" >&2; fail "$1: not one line"; }
    grep -q -E "$2" "$1" || { cat "$1" >&2; fail "$1: no match for $2"; }
    echo "  $(cat "$1")"
}

rc=0
timeout 30 "$DISKSERVE" -k "$T/second.sock" -f raw rbd:rbd/img \
    >"$T/second.log" 2>&1 || rc=$?
[ $rc = 1 ] || fail "the second writer exited $rc, not 1"
one_line "$T/second.log" "^rbd: rbd/img: another client [^ ]+ holds the image.s exclusive lock"

# The first server still owns the image.
qemu-io -f raw -c "write -P 0x32 1M 1M" -c flush -c "read -P 0x31 0 1M" \
    -c "read -P 0x32 1M 1M" "$first" >"$T/io.log" ||
    fail "the first server stopped serving after the refusal"
rbd status rbd/img >/dev/null

ds_start reader -r -f raw rbd:rbd/img
qemu-io -r -f raw -c "read -P 0x31 0 1M" "$DS_URI" >/dev/null ||
    fail "a read-only second server cannot read"
ds_stop "$DS_PID" || fail "the reader exited with an error"
ds_stop "$(echo $_ds_pids | cut -d' ' -f1)" ||
    fail "the first server exited with an error"

# A conf whose monitor address has nobody listening.
sed -e 's/^mon host = .*/mon host = [v2:127.0.0.1:9]/' \
    -e 's/^client mount timeout = .*/client mount timeout = 3/' \
    "$CEPH_CONF" >"$T/nomon.conf"
i=0
while read -r name pattern; do
    i=$((i + 1))
    rc=0
    timeout 60 "$DISKSERVE" -k "$T/bad$i.sock" "$name" >"$T/bad$i.log" 2>&1 ||
        rc=$?
    [ $rc = 1 ] || { cat "$T/bad$i.log" >&2; fail "$name: exit $rc, not 1"; }
    one_line "$T/bad$i.log" "$pattern"
done <<EOF2
rbd:nopool/img ^rbd: nopool/img: no such pool$
rbd:rbd/nosuch ^rbd: rbd/nosuch: no such image$
rbd:rbd/img@nosuch ^rbd: rbd/img@nosuch: no such image or snapshot$
rbd:rbd/img:conf=$T/missing.conf ^rbd: rbd/img: cannot read conf $T/missing.conf: No such file
rbd:rbd/img:id=stranger ^rbd: rbd/img: cannot connect to the cluster as stranger \(conf $CEPH_CONF\)
rbd:rbd/img:conf=$T/nomon.conf ^rbd: rbd/img: cannot connect to the cluster as admin \(conf $T/nomon.conf\): Connection timed out$
rbd:rbd ^rbd:rbd: bad name
rbd:rbd/img:bogus=1 ^rbd:rbd/img:bogus=1: bad name
EOF2
# --fork would lose librados's threads in the child: refused up front.
rc=0
"$DISKSERVE" --fork -k "$T/fork.sock" rbd:rbd/img >"$T/fork.log" 2>&1 || rc=$?
[ $rc = 2 ] || fail "--fork with an RBD image exited $rc, not 2"
one_line "$T/fork.log" "^diskserve: --fork cannot serve RBD images"
echo ok
