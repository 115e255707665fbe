#!/bin/sh
# Claim: diskserve-img map prints what qemu-img map prints, in JSON
# (start, length, depth, present, zero, data, offset of every entry) and
# as text, through backing chains (qcow2 and raw backing files, backing
# files shorter than the overlay), with data, zero (plain and allocated)
# and discarded clusters, compressed clusters (the text form then fails
# as qemu-img's does), extended L2 subclusters, 512 B and 2 MiB clusters,
# external data files, metadata preallocation, and sparse raw images.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"

cd "$T"

# agree [-f FMT] FILE: both maps, JSON and text, with exit statuses.
agree()
{
    local ro=0 rq=0
    img map --output=json "$@" >ours.json || fail "map --output=json $*"
    qemu-img map --output=json "$@" >qemu.json
    $IMGCMP map ours.json qemu.json || fail "map $* differs"
    img map "$@" >ours.txt 2>/dev/null || ro=$?
    qemu-img map "$@" >qemu.txt 2>/dev/null || rq=$?
    [ "$ro" = "$rq" ] || fail "map $*: exit $ro, qemu-img $rq"
    cmp -s ours.txt qemu.txt || {
        diff ours.txt qemu.txt >&2
        fail "text map $* differs"
    }
}

# A chain: base.qcow2 (4 MiB) <- top.qcow2 (8 MiB).
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c "write -P 1 0 64k" -c "write -P 2 1M 64k" -c "write -z 2M 64k" \
    base.qcow2 >/dev/null
agree base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 8M
qemu-io -c "write -P 3 64k 64k" -c "write -z 1M 64k" -c "write -P 5 5M 4k" \
    top.qcow2 >/dev/null
agree top.qcow2
qemu-io -c "write -c -P 4 3M 64k" top.qcow2 >/dev/null
agree top.qcow2                 # the text form fails on both

# Zero clusters that keep their allocation, discards, a snapshot.
qemu-img create -q -f qcow2 z.qcow2 16M
qemu-io -c "write -P 1 0 2M" -c "write -z 64k 64k" -c "discard 128k 64k" \
    -c "write -z -u 512k 64k" z.qcow2 >/dev/null
agree z.qcow2
qemu-img snapshot -c s z.qcow2
qemu-io -c "write -P 9 1M 64k" z.qcow2 >/dev/null
agree z.qcow2

# Subclusters.
qemu-img create -q -f qcow2 -o extended_l2=on x.qcow2 16M
qemu-io -c "write -P 1 0 4k" -c "write -P 2 8k 2k" -c "write -z 64k 8k" \
    -c "write -P 3 1M 64k" -c "write -z 1M 8k" x.qcow2 >/dev/null
agree x.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 \
    xo.qcow2 6M
qemu-io -c "write -P 6 4k 4k" -c "write -z 1M 2k" xo.qcow2 >/dev/null
agree xo.qcow2

# Cluster sizes.
for cs in 512 2M; do
    qemu-img create -q -f qcow2 -o cluster_size=$cs c$cs.qcow2 8M
    qemu-io -c "write -P 1 0 100k" -c "write -P 2 3M 3k" \
        -c "write -P 3 6M 2M" c$cs.qcow2 >/dev/null
    agree c$cs.qcow2
done

# Raw: holes and data, as an image and as a backing file.
truncate -s 8M r.raw
qemu-io -f raw -c "write -P 1 1M 64k" -c "write -P 1 3M 4k" r.raw >/dev/null
agree r.raw
agree -f raw r.raw
qemu-img create -q -f qcow2 -b r.raw -F raw rt.qcow2 12M
qemu-io -c "write -P 5 2M 64k" rt.qcow2 >/dev/null
agree rt.qcow2

# External data file, metadata preallocation.
qemu-img create -q -f qcow2 -o data_file=e.data e.qcow2 16M
qemu-io -c "write -P 1 1M 64k" -c "write -z 4M 64k" e.qcow2 >/dev/null
agree e.qcow2
qemu-img create -q -f qcow2 -o preallocation=metadata p.qcow2 16M
qemu-io -c "write -P 1 1M 64k" p.qcow2 >/dev/null
agree p.qcow2

# Images diskserve-img made.
img create -q -f qcow2 -o cluster_size=4k ours.qcow2 5M
qemu-io -c "write -P 1 4k 8k" ours.qcow2 >/dev/null
agree ours.qcow2
echo OK
