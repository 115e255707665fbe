#!/bin/sh
# Claim: a read served inline on the event loop thread does not hold up
# the frees queued after it.  After one such read, 4096 single-cluster
# trims, a flush and 16 MiB of single-cluster writes (qcow2-free-drain.py)
# need a handful of syncs, not one per write, and the writes reuse the
# trimmed space: the file ends no bigger than the data it holds plus a
# little metadata.  The same with reads on a second connection running
# throughout, and with the image both in memory (tmpfs: reads and writes
# inline) and on the build directory's file system.
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img /usr/bin/python3
DRAIN="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2-free-drain.py"

disk=$(mktemp -d "$abs_top_builddir/tests/qcow2/drain.XXXXXX")
mem=$(mktemp -d /dev/shm/ds-drain.XXXXXX)
trap 'rm -rf "$disk" "$mem"; _ds_cleanup' EXIT
# Data: 16 MiB trimmed then 16 MiB written again, plus 1 MiB kept.  Past
# 24 MiB the trimmed clusters were not reused.
limit=$((24 << 20))
for dir in "$mem" "$disk"; do
    for mode in "" --concurrent-reads; do
        name=drain$(echo "$mode" | tr -d -)
        img="$dir/$name.qcow2"
        qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 64M
        DISKSERVE_IO_LOG="$dir/$name.iolog" ds_start "$name" -f qcow2 \
            "$img"
        $DRAIN "$DS_URI" "$dir/$name.iolog" $mode ||
            fail "$dir $mode: frees did not drain"
        ds_stop "$DS_PID" || fail "$dir $mode: server exit status"
        qemu-img check -q "$img" || fail "$dir $mode: qemu-img check"
        size=$(stat -c %s "$img")
        echo "$(stat -f -c %T "$dir") ${mode:-one reader}: file $size bytes"
        [ "$size" -le $limit ] ||
            fail "$dir $mode: file is $size bytes, more than $limit:" \
                "the trimmed clusters were not reused"
        rm -f "$dir/$name.iolog"
    done
done
