#!/bin/sh
# Claim: when the cluster's only OSD is killed (SIGKILL) while a raw
# export of an RBD image has a workload in flight (writes, zero writes,
# trims, flushes; eight requests in flight on each of two connections),
# that export's requests wait for it and no request fails; the same
# diskserve process meanwhile serves a file-backed export at once
# (write, flush, read back); once the OSD is started again every
# waiting request completes, and the image holds what the clients'
# shadow holds (read back through the export, and by `rbd export`).
# The OSD keeps its data on a BlueStore file here (memstore would lose
# everything with the process), so acknowledged writes must survive it.
# Two outages, at seeded moments.  Then, with rados_osd_op_timeout set
# in the conf, a read the dead OSD never answers fails with EIO instead
# of waiting, and reads work again once the OSD is back.
. "$abs_top_srcdir/tests/functions.sh"
MICRO_CEPH_STORE=bluestore
export MICRO_CEPH_STORE
. "$abs_top_srcdir/tests/rbd/rbd-functions.sh"

size=$((16 << 20))
rbd create --size 16M rbd/disk
truncate -s $size "$T/shadow" "$T/local.raw"
cat >"$T/ds.conf" <<EOF
[server]
socket = $T/ds.sock
[export disk]
image = rbd:rbd/disk
format = raw
[export local]
image = $T/local.raw
format = raw
EOF
"$DISKSERVE" --config "$T/ds.conf" >"$T/ds.log" 2>&1 &
DS_PID=$!
_ds_pids="$_ds_pids $DS_PID"
wait_for_socket "$T/ds.sock" "$DS_PID"
rbd_uri="nbd+unix:///disk?socket=$T/ds.sock"
local_uri="nbd+unix:///local?socket=$T/ds.sock"

rbd_workload w "$rbd_uri" $size 2 "$T/shadow" --ops 5000 --inflight 8 \
    --max-len $((128 << 10)) >"$T/w.out" 2>&1 &
wpid=$!

r=0
for pause in $((SEED % 7 + 3)) $((SEED / 7 % 7 + 3)); do
    r=$((r + 1))
    sleep "0.$pause"
    kill -0 $wpid 2>/dev/null || fail "outage $r: the workload ended before it"
    "$MICRO_CEPH" kill-osd "$CEPH_DIR" || fail "outage $r: kill-osd"
    echo "outage $r: OSD killed 0.$pause s in ($(date +%T))"
    byte=$(printf '0x%02x' $((0x40 + r)))
    timeout 15 qemu-io -f raw -c "write -P $byte 0 1M" -c flush \
        -c "read -P $byte 0 1M" "$local_uri" >"$T/local$r.out" 2>&1 || {
        cat "$T/local$r.out" >&2
        fail "outage $r: the file export was not served while the OSD was down"
    }
    sleep 2
    kill -0 $wpid 2>/dev/null ||
        fail "outage $r: the workload ended while the OSD was down"
    kill -0 "$DS_PID" || fail "outage $r: diskserve died"
    "$MICRO_CEPH" start-osd "$CEPH_DIR" || fail "outage $r: start-osd"
    # Reading the image's header needs the OSD: it is back when this is.
    timeout 90 rbd info rbd/disk >/dev/null ||
        fail "outage $r: the OSD did not come back"
    echo "outage $r: OSD serving again ($(date +%T))"
done

wait $wpid || { cat "$T/w.out" >&2; fail "the workload failed"; }
cat "$T/w.out"
ds_stop "$DS_PID" || fail "diskserve exited with an error"
same_as_shadow w rbd/disk "$T/shadow"

# With rados_osd_op_timeout in the conf, a read the OSD does not answer
# fails with EIO after it, and the export serves again once it is back.
cp "$CEPH_CONF" "$T/timeout.conf"
printf '[client]\nrados osd op timeout = 2\n' >>"$T/timeout.conf"
ds_start short -r -f raw "rbd:rbd/disk:conf=$T/timeout.conf"
"$MICRO_CEPH" kill-osd "$CEPH_DIR" || fail "kill-osd"
rc=0
timeout 30 qemu-io -r -f raw -c "read 1M 64k" "$DS_URI" >"$T/eio.out" 2>&1 ||
    rc=$?
cat "$T/eio.out"
[ $rc != 124 ] || fail "a read with an OSD op timeout of 2 s waited 30 s"
grep -q "read failed: Input/output error" "$T/eio.out" ||
    fail "a timed-out read did not fail with EIO"
"$MICRO_CEPH" start-osd "$CEPH_DIR" || fail "start-osd"
timeout 90 rbd info rbd/disk >/dev/null || fail "the OSD did not come back"
qemu-io -r -f raw -c "read 1M 64k" "$DS_URI" >/dev/null ||
    fail "the export did not serve again after the OSD came back"
ds_stop "$DS_PID" || fail "the read-only server exited with an error"
echo ok
