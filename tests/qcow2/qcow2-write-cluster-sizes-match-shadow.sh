#!/bin/sh
# Claim: after seeded workloads of writes (aligned and not, in place and
# allocating, many in flight on the same clusters), zero writes, trims
# and flushes, images with 512-byte, 4 KiB, 64 KiB and 2 MiB clusters,
# version 2 and 3, refcounts of 1, 2, 16 and 64 bits, and a metadata
# cache of a few tables (evictions write tables back all the time) pass
# qemu-img check with no error and no leak, and qemu reads them exactly
# as the workload's shadow says.  SEED=N replays a run.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"

# case NAME SIZE CREATE-OPTIONS [workload options]
case_()
{
    local name=$1 size=$2 opts=$3 img="$T/$1.qcow2"
    shift 3
    qemu-img create -q -f qcow2 -o "$opts" "$img" "$size"
    # Some data first, so that writes also land in place.
    qemu-io -f qcow2 -c "write -P 0x5a 0 300k" -c "write -P 0xa5 1M 64k" \
        "$img" >/dev/null
    write_and_judge "$name" "$img" "$@"
}

case_ c512 8M cluster_size=512 --max-len 12288
case_ c4k 16M cluster_size=4k
case_ c64k 64M cluster_size=64k --hot 1048576
case_ c2m 64M cluster_size=2M --max-len 3145728 --ops 150
case_ v2 32M compat=0.10 --mix write:70,zero:15,trim:8,flush:4
case_ v2-512 4M compat=0.10,cluster_size=512 --max-len 8192
case_ refcount1 16M cluster_size=4k,refcount_bits=1
case_ refcount64 8M cluster_size=512,refcount_bits=64 --max-len 8192
case_ refcount2 8M cluster_size=1k,refcount_bits=2 --max-len 8192
case_ aligned 32M cluster_size=64k --align 4096
DS_OPTS="--cache-size 4k"
case_ small-cache 8M cluster_size=512 --max-len 12288 --hot 0
case_ small-cache-64k 64M cluster_size=64k,refcount_bits=64 --hot 0
