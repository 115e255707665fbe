#!/bin/sh
# Claim: qcow2 images made by diskserve-img create pass qemu-img check,
# qemu-img info shows exactly the options given (the same info as for an
# image qemu-img create makes with those options: v2 and v3, 512 B and
# 2 MiB clusters, extended L2, lazy refcounts, zstd, refcount widths 1 to
# 64, backing files, sizes from 0 to ones needing several refcount
# blocks), qemu can write to them, and raw images get their size.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"

mkdir "$T/ours" "$T/qemu"
qemu-img create -q -f qcow2 "$T/ours/base.qcow2" 100M
cp "$T/ours/base.qcow2" "$T/qemu/base.qcow2"

# same OPTIONS SIZE: create with both tools, compare qemu-img's view.
same()
{
    local o=$1 size=$2
    rm -f "$T/ours/x.qcow2" "$T/qemu/x.qcow2"
    img create -q -f qcow2 ${o:+-o "$o"} "$T/ours/x.qcow2" $size ||
        fail "create -o '$o' $size"
    qemu-img create -q -f qcow2 ${o:+-o "$o"} "$T/qemu/x.qcow2" $size
    qemu_clean "$T/ours/x.qcow2"
    (cd "$T/ours" && qemu-img info --output=json x.qcow2) >"$T/ours.json"
    (cd "$T/qemu" && qemu-img info --output=json x.qcow2) >"$T/qemu.json"
    # The refcount layout may differ (512 B clusters): not actual-size.
    sed -i '/actual-size/d' "$T/ours.json" "$T/qemu.json"
    $IMGCMP info "$T/ours.json" "$T/qemu.json" ||
        fail "qemu-img info differs for -o '$o' $size"
}

for size in 0 1000 1G 3T; do
    same "" $size
done
for o in compat=0.10 compat=1.1 cluster_size=512 cluster_size=4k \
         cluster_size=2M extended_l2=on extended_l2=on,cluster_size=16k \
         lazy_refcounts=on compression_type=zstd compression_type=zlib \
         refcount_bits=1 refcount_bits=2 refcount_bits=4 refcount_bits=8 \
         refcount_bits=32 refcount_bits=64 \
         cluster_size=512,refcount_bits=64 \
         compat=0.10,lazy_refcounts=off \
         extended_l2=on,lazy_refcounts=on,refcount_bits=1 \
         extended_l2=on,compression_type=zstd,refcount_bits=1 \
         backing_file=base.qcow2,backing_fmt=qcow2 \
         compat=0.10,backing_file=base.qcow2,backing_fmt=qcow2 \
         extended_l2=on,backing_file=base.qcow2,backing_fmt=qcow2; do
    same "$o" 64M
done
# Sizes that need many L1 clusters and several refcount blocks.
same cluster_size=512 4G
same cluster_size=512,refcount_bits=64 16G
same cluster_size=2M,refcount_bits=1 100T

# -b/-F, with the size taken from the backing file.
cd "$T/ours"
img create -q -f qcow2 -b base.qcow2 -F qcow2 over.qcow2
qemu_clean over.qcow2
qemu-img info --output=json over.qcow2 >"$T/over.json"
/usr/bin/python3 - "$T/over.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d['virtual-size'] == 100 << 20, d
assert d['backing-filename'] == 'base.qcow2', d
assert d['backing-filename-format'] == 'qcow2', d
PY

# The images hold data: write through qemu, check, read back.
for o in "" compat=0.10 cluster_size=512 extended_l2=on refcount_bits=1 \
         refcount_bits=64 lazy_refcounts=on; do
    rm -f "$T/w.qcow2"
    img create -q -f qcow2 ${o:+-o "$o"} "$T/w.qcow2" 8M
    qemu-io -c "write -P 0x5a 0 3M" -c "write -P 0xa5 5M 1M" \
        "$T/w.qcow2" >/dev/null
    qemu_clean "$T/w.qcow2"
    qemu-io -c "read -P 0x5a 0 3M" -c "read -P 0 3M 2M" \
        -c "read -P 0xa5 5M 1M" "$T/w.qcow2" >"$T/read.out" ||
        fail "data read back wrong for -o '$o'"
done

# A backing chain through overlays diskserve-img made reads the base.
qemu-io -c "write -P 7 1M 64k" "$T/ours/base.qcow2" >/dev/null
qemu-io -c "read -P 7 1M 64k" "$T/ours/over.qcow2" >/dev/null ||
    fail "overlay does not read its backing file"

# raw: a sparse file of the size, sizes with suffixes.
img create -q -f raw "$T/r.img" 1.5M
[ "$(stat -c %s "$T/r.img")" = 1572864 ] || fail "raw size"
img create -q "$T/r2.img" 3k
[ "$(stat -c %s "$T/r2.img")" = 3072 ] || fail "raw default format"
echo OK
