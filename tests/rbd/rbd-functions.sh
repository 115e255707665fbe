# Helpers for the RBD tests, sourced after tests/functions.sh.  Each test
# script starts one throwaway cluster (tests/rbd/micro-ceph.sh, about
# 8 s) and stops it at exit, failure or not: the servers first, then
# the cluster's daemons, then its directory.  A lock file keeps to one
# cluster at a time (memstore holds everything in RAM), so parallel
# `make check` runs the RBD tests one after the other.
#
# After sourcing: CEPH_CONF names the cluster's ceph.conf (librados
# clients, including diskserve and qemu's rbd driver, read it from the
# environment) and the pool "rbd" is ready.

MICRO_CEPH="$abs_top_srcdir/tests/rbd/micro-ceph.sh"
WORKLOAD="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2-write-workload.py"
CEPH_DIR=$(mktemp -u "${TMPDIR:-/tmp}/ds-ceph.XXXXXX")
SEED=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed: $SEED"

_rbd_cleanup()
{
    _ds_cleanup
    "$MICRO_CEPH" stop "$CEPH_DIR" || true
}
trap _rbd_cleanup EXIT

# One cluster at a time on this machine, whatever runs the tests.
exec 9>"${TMPDIR:-/tmp}/ds-ceph.lock"
flock -w 900 9 || fail "another test cluster ran for 15 minutes"
"$MICRO_CEPH" start "$CEPH_DIR" >"$T/ceph-start.log" 2>&1 || {
    cat "$T/ceph-start.log" >&2
    fail "the test cluster did not start"
}
export CEPH_CONF="$CEPH_DIR/ceph.conf"

# rbd_workload NAME URI SIZE CONNS SHADOW [workload options]: CONNS
# clients at once, each in its own slice of the export, several requests
# in flight each, applying every request to SHADOW too.
rbd_workload()
{
    local name=$1 uri=$2 size=$3 conns=$4 shadow=$5
    shift 5
    local i=0 pids="" lo hi bad=0
    while [ $i -lt "$conns" ]; do
        lo=$((size / conns * i / 4096 * 4096))
        hi=$((size / conns * (i + 1) / 4096 * 4096))
        [ $((i + 1)) -lt "$conns" ] || hi=$size
        $WORKLOAD "$uri" "$shadow" --seed $((SEED + i)) --start $lo \
            --end $hi "$@" >"$T/$name.w$i" 2>&1 &
        pids="$pids $!"
        i=$((i + 1))
    done
    for p in $pids; do
        wait "$p" || bad=1
    done
    cat "$T/$name".w*
    [ $bad = 0 ] || fail "$name: a workload client failed"
}

# same_as_shadow NAME POOL/IMAGE SHADOW [FORMAT]: `rbd export` of the
# image, read as FORMAT (raw by default) by qemu, holds SHADOW's bytes.
same_as_shadow()
{
    local name=$1 spec=$2 shadow=$3 fmt=${4:-raw}
    rm -f "$T/$name.export"
    rbd export "$spec" "$T/$name.export" >/dev/null 2>&1 ||
        fail "$name: rbd export $spec"
    qemu-img compare -f "$fmt" -F raw "$T/$name.export" "$shadow" ||
        fail "$name: rbd export of $spec differs from the shadow"
}
