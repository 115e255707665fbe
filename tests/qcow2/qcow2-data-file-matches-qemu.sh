#!/bin/sh
# Claim: images with an external data file (-o data_file=...), with and
# without data_file_raw, read exactly as qemu reads them, with qemu-nbd's
# block status.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"

for raw in off on; do
    img="$T/ext-$raw.qcow2"
    qemu-img create -q -f qcow2 \
        -o data_file="$T/ext-$raw.data",data_file_raw=$raw "$img" 8M
    qio "$img" \
        "write -s $(stamp 1 0 1M) 0 1M" \
        "write -z 2M 64k" \
        "write -s $(stamp 2 3333333 444444) 3333333 444444" \
        "discard 512k 64k" \
        "write -s $(stamp 3 7M 1M) 7M 1M"
    check_export "ext-$raw" "$img"
done

# A data file named by a relative path: qemu 7.2 resolves it against
# its working directory, diskserve against the image's directory first
# (as for backing files), then the working directory.
mkdir "$T/d"
cd "$T/d"
qemu-img create -q -f qcow2 -o data_file=rel.data rel.qcow2 4M
qio rel.qcow2 "write -s $(stamp 4 64k 1M) 64k 1M" "write -z 2M 64k"
check_export rel-data rel.qcow2
cd "$T"
ds_start rel-from-elsewhere -r d/rel.qcow2
qemu-img compare -f raw -F raw "$T/rel-data.raw" "$DS_URI" ||
    fail "relative data file not found next to the image"
