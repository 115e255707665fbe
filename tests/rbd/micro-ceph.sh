#!/bin/bash
# A throwaway one-node Ceph cluster for the RBD tests: one monitor, one
# manager and one OSD on memstore (data in RAM), all on 127.0.0.1, with
# cephx and a pool "rbd".
#
#   micro-ceph.sh start DIR   DIR must not exist; prints nothing on
#                             success, leaves DIR/ceph.conf and DIR/pids
#   micro-ceph.sh stop DIR    SIGKILLs the daemons in DIR/pids (memstore
#                             has nothing worth saving) and removes DIR
#   micro-ceph.sh kill-osd DIR    SIGKILLs the OSD, waits until it is
#                                 gone and has the monitor mark it down
#                                 (with no peer to report it, the monitor
#                                 would take minutes to notice)
#   micro-ceph.sh start-osd DIR   starts the OSD again (bluestore only:
#                                 memstore lost everything with it)
#
# MICRO_CEPH_STORE=bluestore gives the OSD a BlueStore on a sparse 2 GiB
# file in DIR instead of memstore, for tests that kill the OSD and need
# its data afterwards (slower to start, and data reaches the file).
#
# Tests source tests/rbd/rbd-functions.sh rather than calling this.
set -euo pipefail

usage() { echo "usage: $0 start|stop|kill-osd|start-osd DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
dir=$(realpath -m "$2")

stop()
{
    if [ -f "$dir/pids" ]; then
        while read -r pid; do
            kill -9 "$pid" 2>/dev/null || true
        done <"$dir/pids"
        # Wait until each is gone (or a zombie nobody reaps).
        for _ in $(seq 100); do
            local left=0
            while read -r pid; do
                local st
                st=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true)
                [ -n "$st" ] && [ "$st" != Z ] && left=1
            done <"$dir/pids"
            [ $left = 0 ] && break
            sleep 0.1
        done
    fi
    rm -rf "$dir"
}

# The OSD's pid is the last line of DIR/pids.
start_osd()
{
    ceph-osd -i "$(cat "$dir/osd-id")" -f >>"$dir/log/osd.out" 2>&1 &
    echo $! >>"$dir/pids"
}

kill_osd()
{
    local pid
    pid=$(tail -n 1 "$dir/pids")
    kill -9 "$pid"
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null ||
           [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
            CEPH_CONF=$dir/ceph.conf ceph osd down "$(cat "$dir/osd-id")" \
                >/dev/null 2>&1
            return
        fi
        sleep 0.1
    done
    echo "the OSD (pid $pid) did not die" >&2
    exit 1
}

start()
{
    [ -e "$dir" ] && { echo "$dir exists" >&2; exit 1; }
    mkdir -p "$dir"/{log,run,mon.a,mgr.x,osd.0}
    local port fsid osd_uuid osd_id
    while :; do
        port=$(shuf -i 20000-59999 -n 1)
        ss -Htln "sport = :$port" | grep -q . || break
    done
    fsid=$(uuidgen)
    osd_uuid=$(uuidgen)
    export CEPH_CONF=$dir/ceph.conf
    local store_conf
    case ${MICRO_CEPH_STORE:-memstore} in
    memstore)
        store_conf="osd objectstore = memstore
memstore device bytes = 2147483648
memstore page set = true" ;;
    bluestore)
        store_conf="osd objectstore = bluestore
bluestore block create = true
bluestore block size = 2147483648
bluestore fsck on mkfs = false
bluestore fsck on mount = false
bluestore cache autotune = false
bluestore cache size = 268435456
osd memory target = 1073741824" ;;
    *) echo "MICRO_CEPH_STORE: memstore or bluestore" >&2; exit 2 ;;
    esac
    # memstore page sets: by default memstore keeps an object as one
    # buffer list that every small write splits further, so a 4k write
    # into a 4 MiB object costs the OSD more CPU the more the object was
    # written before (140 us rising past 400 us within a few benchmark
    # runs, so their order decided the results); with 64 KiB pages it
    # starts near 50 us and rises far more slowly.
    cat >"$CEPH_CONF" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
keyring = $dir/keyring
run dir = $dir/run
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
mon data = $dir/\$name
mgr data = $dir/\$name
osd data = $dir/\$name
$store_conf
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
mgr initial modules = iostat
client mount timeout = 15
[osd]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
[mgr]
public addr = 127.0.0.1
EOF
    local k=$dir/keyring
    ceph-authtool "$k" -C -g -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$k" -g -n client.admin --cap mon 'allow *' \
        --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$k" -g -n osd.0 --cap mon 'allow profile osd' \
        --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
    ceph-authtool "$k" -g -n mgr.x --cap mon 'allow profile mgr' \
        --cap osd 'allow *' >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" \
        "$dir/monmap" >/dev/null
    ceph-mon --mkfs -i a --monmap "$dir/monmap" --keyring "$k" \
        >"$dir/log/mon-mkfs.out" 2>&1
    : >"$dir/pids"
    ceph-mon -i a -f >"$dir/log/mon.out" 2>&1 &
    echo $! >>"$dir/pids"
    ceph-mgr -i x -f >"$dir/log/mgr.out" 2>&1 &
    echo $! >>"$dir/pids"
    osd_id=$(ceph osd new "$osd_uuid")
    ceph-osd -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" \
        >"$dir/log/osd-mkfs.out" 2>&1
    echo "$osd_id" >"$dir/osd-id"
    start_osd
    ceph osd pool create rbd 8 >/dev/null 2>&1
    # Returns once the placement groups are active.
    timeout 120 rbd pool init rbd
}

case $1 in
start) start ;;
stop) stop ;;
kill-osd) kill_osd ;;
start-osd) export CEPH_CONF=$dir/ceph.conf; start_osd ;;
*) usage ;;
esac
