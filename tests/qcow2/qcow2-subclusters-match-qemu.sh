#!/bin/sh
# Claim: images with extended L2 entries (extended_l2=on), where clusters
# are partly written, partly zeroed and partly unallocated, at the
# subcluster level, with and without a backing file, read exactly as
# qemu reads them, with qemu-nbd's block status and allocation depth.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"

for cs in 16384 65536 2097152; do
    sc=$((cs / 32))
    img="$T/x$cs.qcow2"
    qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=$cs \
        "$img" 16M
    a=$((3 * sc + 100)) b=$((cs * 5 + 31 * sc))
    qio "$img" \
        "write -s $(stamp 1 0 $sc) 0 $sc" \
        "write -s $(stamp 2 $a $((sc / 2))) $a $((sc / 2))" \
        "write -z $((5 * sc)) $((2 * sc))" \
        "write -s $(stamp 3 $((cs * 2)) $cs) $((cs * 2)) $cs" \
        "write -z $((cs * 2 + sc)) $sc" \
        "discard $((cs * 2 + 4 * sc)) $((2 * sc))" \
        "write -s $(stamp 4 $b $((2 * sc))) $b $((2 * sc))" \
        "write -s $(stamp 5 15M 1M) 15M 1M"
    check_export "x$cs" "$img"

    # The same pattern over a backing file: unallocated subclusters
    # show the backing data, zeroed ones do not.
    base="$T/xb$cs.qcow2"
    qemu-img create -q -f qcow2 "$base" 16M
    qio "$base" "write -s $(stamp 9 0 8M) 0 8M"
    top="$T/xt$cs.qcow2"
    qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=$cs \
        -b "$base" -F qcow2 "$top"
    c=$((cs * 3 + 10 * sc))
    qio "$top" \
        "write -s $(stamp 6 $((sc + 7)) 5000) $((sc + 7)) 5000" \
        "write -z $((4 * sc)) $sc" \
        "write -s $(stamp 7 $c $sc) $c $sc" \
        "discard $((cs * 3 + 12 * sc)) $sc"
    check_export "xt$cs" "$top"
done
