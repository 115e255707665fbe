#!/bin/bash
# NBD over TLS, side by side: diskserve and qemu-nbd serving the same
# read-only raw image with the same X.509 certificates, and diskserve in
# the clear, driven by bench/tls-read.c (libnbd, a fixed queue depth).
# See bench/README.md ("TLS").  Usage:
#   bench/tls.sh [--seconds S] [--rounds N] [--size MIB] [--shm DIR]
set -eu
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
builddir=${BUILDDIR:-$top/build}
seconds=10 rounds=3 size_mib=1024 shm=/dev/shm
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --size) size_mib=$2; shift 2 ;;
    --shm) shm=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds S] [--rounds N] [--size MIB] [--shm DIR]" >&2
       exit 2 ;;
    esac
done
diskserve=$builddir/diskserve
[ -x "$diskserve" ] || { echo "build diskserve first ($diskserve)" >&2; exit 1; }

W=$(mktemp -d "$shm/ds-tls-bench.XXXXXX")
pids=()
cleanup()
{
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

cc -O2 -o "$W/tls-read" "$here/tls-read.c" \
    $(pkg-config --cflags --libs libnbd)

# Certificates: the test suite's helper, with its two functions it needs.
T=$W
fail() { echo "bench: $*" >&2; exit 1; }
require() { :; }
# shellcheck source=../tests/tls/tls-functions.sh
. "$top/tests/tls/tls-functions.sh"
make_pki
pki=$W/pki

head -c $((size_mib << 20)) /dev/urandom >"$W/disk.img"

wait_sock()
{
    for _ in $(seq 200); do
        [ -S "$1" ] && return 0
        sleep 0.05
    done
    echo "bench: $1 did not appear" >&2
    exit 1
}

declare -A pid_of
"$diskserve" -v -k "$W/ds-tls.sock" -r -f raw --tls=require \
    --tls-certificates "$pki/server" "$W/disk.img" 2>"$W/ds-tls.log" &
pids+=($!)
pid_of[ds-tls]=$!
qemu-nbd -k "$W/qn-tls.sock" -r -f raw -e 16 --cache=writeback \
    --aio=threads -t --object \
    "tls-creds-x509,id=tls0,dir=$pki/server,endpoint=server" \
    --tls-creds tls0 "$W/disk.img" 2>"$W/qn-tls.log" &
pids+=($!)
pid_of[qn-tls]=$!
"$diskserve" -k "$W/ds-plain.sock" -r -f raw "$W/disk.img" \
    2>"$W/ds-plain.log" &
pids+=($!)
pid_of[ds-plain]=$!

# CPU time (user + system, all threads) a server has used, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for s in ds-tls qn-tls ds-plain; do wait_sock "$W/$s.sock"; done

uri_of()
{
    case $1 in
    ds-plain) echo "nbd+unix:///?socket=$W/$1.sock" ;;
    *) echo "nbds+unix:///?socket=$W/$1.sock&tls-certificates=$pki/client" ;;
    esac
}

echo "RUN $(date -u +%FT%TZ) $(nproc) CPUs, image ${size_mib} MiB in $shm," \
     "$rounds rounds of ${seconds} s, $(gnutls-cli --version | head -1)"
jobs="randread-4k-qd32:4096:32:rand seqread-1m-qd8:1048576:8:seq"
for r in $(seq "$rounds"); do
    for j in $jobs; do
        IFS=: read -r name bs qd mode <<<"$j"
        for s in ds-tls qn-tls ds-plain; do
            c0=$(cpu_ticks "${pid_of[$s]}")
            out=$("$W/tls-read" "$(uri_of "$s")" "$bs" "$qd" "$seconds" \
                  "$mode")
            c1=$(cpu_ticks "${pid_of[$s]}")
            # server CPU milliseconds per GiB served
            cpu=$(echo "$out" | awk -v t=$((c1 - c0)) -v hz="$hz" -v bs="$bs" \
                  '{ printf "%.0f", t * 1000 / hz / ($2 * bs / 1073741824) }')
            echo "round $r $name $s $out cpu_ms_per_gib $cpu"
            echo "$name $s $out cpu_ms_per_gib $cpu" >>"$W/results"
        done
    done
done

echo
printf '%-18s %-9s %12s %10s %14s %s\n' job server "median IOPS" "MiB/s" \
    "CPU ms/GiB" tls
for j in $jobs; do
    name=${j%%:*}
    for s in ds-tls qn-tls ds-plain; do
        med=$(awk -v n="$name" -v s="$s" '$1 == n && $2 == s { print $8 }' \
              "$W/results" | sort -n | awk '{ v[NR] = $1 }
              END { print v[int((NR + 1) / 2)] }')
        mib=$(awk -v n="$name" -v s="$s" '$1 == n && $2 == s { print $10 }' \
              "$W/results" | sort -n | awk '{ v[NR] = $1 }
              END { print v[int((NR + 1) / 2)] }')
        cpu=$(awk -v n="$name" -v s="$s" '$1 == n && $2 == s { print $14 }' \
              "$W/results" | sort -n | awk '{ v[NR] = $1 }
              END { print v[int((NR + 1) / 2)] }')
        tls=$(awk -v n="$name" -v s="$s" '$1 == n && $2 == s { print $12 }' \
              "$W/results" | sort -u | tr '\n' ' ')
        printf '%-18s %-9s %12s %10s %14s %s\n' "$name" "$s" "$med" "$mib" \
            "$cpu" "$tls"
        eval "med_${name//-/_}_${s//-/_}=$med"
    done
done
echo
for j in $jobs; do
    name=${j%%:*} n=${j%%:*}
    n=${n//-/_}
    eval "a=\$med_${n}_ds_tls b=\$med_${n}_qn_tls c=\$med_${n}_ds_plain"
    awk -v n="$name" -v a="$a" -v b="$b" -v c="$c" 'BEGIN {
        printf "%s: diskserve TLS / qemu-nbd TLS = %.2fx; diskserve TLS / diskserve plain = %.2fx\n", n, a / b, a / c }'
done
grep -ho "TLS1\.[0-9]" "$W/ds-tls.log" | sort | uniq -c || true
