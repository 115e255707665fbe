#!/bin/bash
# The rbd scenario: diskserve and qemu-nbd serving the same RBD image
# from the one-node test cluster (tests/rbd/micro-ceph.sh), driven by the
# same fio jobs (nbd engine), with `rbd bench` on the image as the
# ceiling librbd reaches without a server.  One cluster, one run; the
# servers alternate for ROUNDS rounds.  A report for people, no
# threshold.
#
#   bench/rbd.sh [BUILDDIR]   (default ./build)
#
# Jobs (JOBS, default all):
#   randread, randwrite   4k QD32 on a raw image written once through
#                         (again before every run of a write job)
#   seqread, seqwrite     1M QD8 on the same image
#   qcow2-randwrite       4k QD32 allocating writes: a fresh qcow2 image
#                         in RBD for every server and round, QCOW2_IOS
#                         writes over QCOW2_SIZE, then qemu-img check
#
# Environment: SIZE (raw image, default 512M; memstore keeps it in RAM),
# RUNTIME (s per fio run, default 10), ROUNDS (default 2), THREADS
# (diskserve --threads, default 32), QCOW2_SIZE (default 4G), QCOW2_IOS
# (default 8000: at most that many 64 KiB clusters land in memstore),
# BASE (another diskserve binary, e.g. an older build, measured beside
# the first as diskserve-base).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
size=${SIZE:-512M}
runtime=${RUNTIME:-10}
rounds=${ROUNDS:-2}
threads=${THREADS:-32}
jobs=${JOBS:-randread randwrite seqread seqwrite qcow2-randwrite}
qsize=${QCOW2_SIZE:-4G}
qios=${QCOW2_IOS:-8000}
base=${BASE:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/ds-bench-rbd.XXXXXX")
ceph_dir=$work/ceph
pids=""
hz=$(getconf CLK_TCK)

cleanup()
{
    for p in $pids; do
        kill "$p" 2>/dev/null || true
    done
    "$top/tests/rbd/micro-ceph.sh" stop "$ceph_dir" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# One cluster at a time on this machine, as in the tests (memstore holds
# everything in RAM, and two clusters would measure each other).
exec 9>"${TMPDIR:-/tmp}/ds-ceph.lock"
flock -w 900 9 ||
    { echo "another test cluster ran for 15 minutes" >&2; exit 1; }
"$top/tests/rbd/micro-ceph.sh" start "$ceph_dir" >"$work/ceph.log" 2>&1 ||
    { cat "$work/ceph.log" >&2; exit 1; }
export CEPH_CONF=$ceph_dir/ceph.conf
# fresh_raw: the raw image, made again and written once through, so that
# reads read data and not absent objects, and every write job's run
# starts from the same objects whatever ran before it.
fresh_raw()
{
    rbd rm rbd/bench >/dev/null 2>&1 || true
    rbd create --size "$size" rbd/bench
    rbd bench --io-type write --io-pattern seq --io-size 4M \
        --io-threads 4 --io-total "$size" rbd/bench >/dev/null
}
fresh_raw

# job_shape JOB: sets type (read|write), pattern (rand|seq), bs, qd.
job_shape()
{
    case $1 in
    seq*) pattern=seq bs=$((1 << 20)) qd=8 ;;
    *) pattern=rand bs=4096 qd=32 ;;
    esac
    case $1 in
    *read) type=read ;;
    *) type=write ;;
    esac
}

# ceiling JOB: librbd alone on the raw image, same size and depth, about
# RUNTIME seconds (rbd bench stops after a byte count: the rate of a
# short probe sets it).
ceiling()
{
    job_shape "$1"
    local rate
    [ "$type" = read ] || fresh_raw
    rate=$(rbd_bench $((bs >= 1048576 ? 200 : 2000)))
    rbd_bench $((rate * runtime))
}

# rbd_bench OPS: ops/s of rbd bench for OPS operations of the job shape.
rbd_bench()
{
    rbd bench --io-type "$type" --io-pattern "$pattern" --io-size "$bs" \
        --io-threads "$qd" --io-total $(($1 * bs)) rbd/bench 2>/dev/null |
        awk '/elapsed:/ { for (i = 1; i <= NF; i++)
                              if ($i == "ops/sec:") print int($(i + 1)) }'
}

# serve NAME FORMAT IMAGE: start NAME on $work/NAME.sock; sets pid.
serve()
{
    local sock=$work/$1.sock
    rm -f "$sock"
    case $1 in
    diskserve|diskserve-base)
        local bin=$build/diskserve
        [ "$1" = diskserve ] || bin=$base
        "$bin" -k "$sock" -f "$2" --threads "$threads" "rbd:rbd/$3" \
            >"$work/$1.log" 2>&1 &
        ;;
    qemu-nbd)
        qemu-nbd -k "$sock" -f "$2" -e 16 --cache=writeback --aio=threads \
            -t "rbd:rbd/$3:conf=$CEPH_CONF" >"$work/$1.log" 2>&1 &
        ;;
    esac
    pid=$!
    pids="$pids $pid"
    for _ in $(seq 200); do
        [ -S "$sock" ] && break
        sleep 0.05
    done
}

cpu_ticks()
{
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# measure NAME JOB: run JOB against NAME (pid $pid); prints "IOPS
# CPU-us-per-request" of the server over fio's measured window.
measure()
{
    local name=$1 job=$2 t0 t1 fpid
    local -a shape
    job_shape "$job"
    if [ "$job" = qcow2-randwrite ]; then
        shape=(--rw=randwrite --number_ios="$qios")
    else
        shape=(--rw="${pattern/seq/}$type" --time_based
               --runtime="$runtime" --ramp_time=2)
    fi
    fio --name="$job" --ioengine=nbd \
        --uri="nbd+unix:///?socket=$work/$name.sock" "${shape[@]}" \
        --bs="$bs" --iodepth="$qd" --norandommap --randrepeat=0 \
        --output-format=json --output="$work/fio.json" >/dev/null &
    fpid=$!
    [ "$job" = qcow2-randwrite ] || sleep 2
    t0=$(cpu_ticks "$pid")
    wait "$fpid"
    t1=$(cpu_ticks "$pid")
    /usr/bin/python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
n = j["read"]["total_ios"] + j["write"]["total_ios"]
us = (int(sys.argv[3]) - int(sys.argv[2])) * 1e6 / int(sys.argv[4])
print(int(j["read"]["iops"] + j["write"]["iops"]), "%.1f" % (us / max(n, 1)))
' "$work/fio.json" "$t0" "$t1" "$hz"
}

# run_server NAME JOB: start NAME for JOB, measure, stop; sets iops[NAME]
# and cpu[NAME], with a qcow2 image checked and removed afterwards.
run_server()
{
    local name=$1 job=$2
    job_shape "$job"
    if [ "$job" = qcow2-randwrite ]; then
        qemu-img create -q -f qcow2 "rbd:rbd/qbench:conf=$CEPH_CONF" \
            "$qsize"
        serve "$name" qcow2 qbench
    else
        [ "$type" = read ] || fresh_raw
        serve "$name" raw bench
    fi
    read -r "iops[$name]" "cpu[$name]" < <(measure "$name" "$job")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    if [ "$job" = qcow2-randwrite ]; then
        qemu-img check -q "rbd:rbd/qbench:conf=$CEPH_CONF" >"$work/check" \
            2>&1 || echo "$name: qemu-img check: $(head -1 "$work/check")" >&2
        rbd rm rbd/qbench >/dev/null 2>&1
    fi
}

ratio()
{
    echo "$1 $2" | awk '{ printf "%.2f", ($2 > 0 ? $1 / $2 : 0) }'
}

declare -A iops cpu
servers="diskserve qemu-nbd"
[ -z "$base" ] || servers="diskserve diskserve-base qemu-nbd"
echo "rbd scenario: raw image $size, random 4k QD32, sequential 1M QD8," \
     "fio ${runtime}s; qcow2 $qsize, $qios allocating 4k writes QD32;" \
     "$rounds rounds, diskserve --threads $threads"
echo "IOPS per server, srv us/req (server CPU per request, all threads);" \
     "ratios are diskserve's"
printf '%-16s %-5s %9s' job round rbd-bench
for s in $servers; do
    printf ' %14s %7s' "$s" "us/req"
done
printf ' %8s %8s' vs-ceil vs-qemu
[ -z "$base" ] || printf ' %8s' vs-base
printf '\n'
for job in $jobs; do
    for r in $(seq "$rounds"); do
        ceil=$(ceiling "$job")
        for s in $servers; do
            run_server "$s" "$job"
        done
        printf '%-16s %-5s %9s' "$job" "$r" "$ceil"
        for s in $servers; do
            printf ' %14s %7s' "${iops[$s]}" "${cpu[$s]}"
        done
        printf ' %8s %8s' "$(ratio "${iops[diskserve]}" "$ceil")" \
            "$(ratio "${iops[diskserve]}" "${iops[qemu-nbd]}")"
        [ -z "$base" ] ||
            printf ' %8s' "$(ratio "${iops[diskserve]}" \
                                   "${iops[diskserve-base]}")"
        printf '\n'
    done
done
