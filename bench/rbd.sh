#!/bin/bash
# The rbd scenario: diskserve and qemu-nbd serving the same RBD image
# (raw) from the one-node test cluster (tests/rbd/micro-ceph.sh), driven
# by the same fio jobs (nbd engine), with `rbd bench` on the image as the
# ceiling librbd reaches without a server.  One cluster, one run; the
# servers alternate for ROUNDS rounds.  A report for people, no
# threshold.
#
#   bench/rbd.sh [BUILDDIR]   (default ./build)
#
# Environment: SIZE (image, default 512M; memstore keeps it in RAM),
# RUNTIME (s per fio run, default 10), ROUNDS (default 2), THREADS
# (diskserve --threads, default 32), JOBS (default "randread randwrite").
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
size=${SIZE:-512M}
runtime=${RUNTIME:-10}
rounds=${ROUNDS:-2}
threads=${THREADS:-32}
jobs=${JOBS:-randread randwrite}
work=$(mktemp -d "${TMPDIR:-/tmp}/ds-bench-rbd.XXXXXX")
ceph_dir=$work/ceph
pids=""

cleanup()
{
    for p in $pids; do
        kill "$p" 2>/dev/null || true
    done
    "$top/tests/rbd/micro-ceph.sh" stop "$ceph_dir" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$top/tests/rbd/micro-ceph.sh" start "$ceph_dir" >"$work/ceph.log" 2>&1 ||
    { cat "$work/ceph.log" >&2; exit 1; }
export CEPH_CONF=$ceph_dir/ceph.conf
rbd create --size "$size" rbd/bench
# Write every object once, so reads read data and not absent objects.
rbd bench --io-type write --io-pattern seq --io-size 4M --io-threads 4 \
    --io-total "$size" rbd/bench >/dev/null

# ceiling JOB: librbd alone, 4k at 32 in flight, about RUNTIME seconds
# (rbd bench stops after a byte count: the rate of a 2 s probe sets it).
ceiling()
{
    local type=${1#rand} rate
    rate=$(rbd_bench "$type" $((2000 * 4096)))
    rbd_bench "$type" $((rate * runtime * 4096))
}

# rbd_bench read|write BYTES: ops/s of rbd bench for BYTES of 4k I/O.
rbd_bench()
{
    local type=$1 total=$2
    rbd bench --io-type "$type" --io-pattern rand --io-size 4K \
        --io-threads 32 --io-total "$total" rbd/bench 2>/dev/null |
        awk '/elapsed:/ { for (i = 1; i <= NF; i++)
                              if ($i == "ops/sec:") print int($(i + 1)) }'
}

# serve NAME: start NAME on $work/NAME.sock; sets pid.
serve()
{
    local sock=$work/$1.sock
    rm -f "$sock"
    case $1 in
    diskserve)
        "$build/diskserve" -k "$sock" -f raw --threads "$threads" \
            rbd:rbd/bench >"$work/$1.log" 2>&1 &
        ;;
    qemu-nbd)
        qemu-nbd -k "$sock" -f raw -e 16 --cache=writeback --aio=threads \
            -t "rbd:rbd/bench:conf=$CEPH_CONF" >"$work/$1.log" 2>&1 &
        ;;
    esac
    pid=$!
    pids="$pids $pid"
    for _ in $(seq 200); do
        [ -S "$sock" ] && break
        sleep 0.05
    done
}

# fio_iops NAME JOB: IOPS fio reaches against NAME.
fio_iops()
{
    fio --name="$2" --ioengine=nbd --uri="nbd+unix:///?socket=$work/$1.sock" \
        --rw="$2" --bs=4k --iodepth=32 --time_based --runtime="$runtime" \
        --ramp_time=2 --norandommap --randrepeat=0 --output-format=json \
        --output="$work/fio.json" >/dev/null
    /usr/bin/python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print(int(j["read"]["iops"] + j["write"]["iops"]))' "$work/fio.json"
}

echo "rbd scenario: image $size, fio 4k QD32 ${runtime}s, $rounds rounds," \
     "diskserve --threads $threads"
printf '%-10s %-10s %10s %10s %10s %8s %8s\n' job round rbd-bench \
    diskserve qemu-nbd vs-ceil vs-qemu
for job in $jobs; do
    for r in $(seq "$rounds"); do
        ceil=$(ceiling "$job")
        serve diskserve
        ds=$(fio_iops diskserve "$job")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        serve qemu-nbd
        qn=$(fio_iops qemu-nbd "$job")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        printf '%-10s %-10s %10s %10s %10s %8.2f %8.2f\n' "$job" "$r" \
            "$ceil" "$ds" "$qn" "$(echo "$ds / $ceil" | bc -l)" \
            "$(echo "$ds / $qn" | bc -l)"
    done
done
