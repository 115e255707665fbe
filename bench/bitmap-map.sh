#!/bin/bash
# How long a backup agent waits for the dirty map of a big disk: a 1 TiB
# qcow2 with one bitmap (64 KiB granularity) holding RUNS dirty runs
# (default 10,000, 64 KiB each, spread over the disk), served read-only
# by diskserve and by qemu-nbd -B; `nbdinfo --map=qemu:dirty-bitmap:b0`
# is timed against each, ROUNDS times (default 3), interleaved, and the
# two maps must be identical.
#
#   bench/bitmap-map.sh [--runs N] [--rounds N] [--diskserve PATH]
#                       [--tmpdir DIR]
set -eu
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
runs=10000 rounds=3 tmp=/dev/shm
diskserve=$here/../build/diskserve
while [ $# -gt 0 ]; do
    case $1 in
    --runs) runs=$2; shift 2;;
    --rounds) rounds=$2; shift 2;;
    --diskserve) diskserve=$2; shift 2;;
    --tmpdir) tmp=$2; shift 2;;
    *) echo "usage: $0 [--runs N] [--rounds N] [--diskserve PATH]" \
            "[--tmpdir DIR]" >&2; exit 2;;
    esac
done
export PATH=/usr/bin:$PATH
w=$(mktemp -d "$tmp/bitmap-map.XXXXXX")
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$w"' EXIT

img=$w/disk.qcow2
qemu-img create -q -f qcow2 "$img" 1T
qemu-img bitmap --add -g 65536 "$img" b0
step=$(( (1 << 40) / runs / 65536 * 65536 ))
/usr/bin/python3 - "$runs" "$step" >"$w/cmds" <<'PY'
import sys
runs, step = int(sys.argv[1]), int(sys.argv[2])
for i in range(runs):
    print("write -z %d 64k" % (i * step + (i % 7) * 65536))
PY
echo "writing $runs runs"
qemu-io -f qcow2 "$img" <"$w/cmds" >/dev/null

# serve NAME ARGV...: start a server on $w/NAME.sock; sets pid.
serve()
{
    local sock=$w/$1.sock
    shift
    rm -f "$sock"
    "$@" >"$w/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do
        [ -S "$sock" ] && nbdinfo --can connect "nbd+unix:///?socket=$sock" \
            2>/dev/null && return 0
        sleep 0.05
    done
    cat "$w/server.log" >&2
    exit 1
}

# map NAME: time one full map; prints seconds, leaves the map in $w/NAME.map
map()
{
    local t0 t1
    t0=$(date +%s.%N)
    nbdinfo --map=qemu:dirty-bitmap:b0 "nbd+unix:///?socket=$w/$1.sock" \
        >"$w/$1.map"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

echo "round server seconds extents"
for r in $(seq "$rounds"); do
    serve ds "$diskserve" -r -k "$w/ds.sock" "$img"
    ds=$(map ds)
    kill $pid; wait $pid 2>/dev/null || true
    serve qn qemu-nbd -r -f qcow2 -B b0 -t -k "$w/qn.sock" "$img"
    qn=$(map qn)
    kill $pid; wait $pid 2>/dev/null || true
    pid=
    cmp -s "$w/ds.map" "$w/qn.map" ||
        { echo "the maps differ" >&2; diff "$w/ds.map" "$w/qn.map" | head >&2;
          exit 1; }
    printf '%d diskserve %.3f %d\n' "$r" "$ds" "$(wc -l <"$w/ds.map")"
    printf '%d qemu-nbd %.3f %d\n' "$r" "$qn" "$(wc -l <"$w/qn.map")"
    printf '%d ratio qemu-nbd/diskserve %.2f\n' "$r" "$(echo "$qn / $ds" | bc -l)"
done
