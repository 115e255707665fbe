#!/bin/sh
# Claim: diskserve-img info --json parses and agrees with qemu-img info
# --output=json on every key both have (sizes, format, cluster size,
# backing file and format, dirty flag, encryption, snapshots and the
# qcow2 format-specific data) for raw, v2 and v3 images, extended L2,
# zstd, lazy refcounts, refcount widths, snapshots, backing chains
# (also with the backing file missing), external data files, LUKS, and
# images marked dirty or corrupt; the text form is qemu-img's (but for
# the LUKS details).
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"

cd "$T"

# agree FILE: both infos of FILE, compared.
agree()
{
    img info --json "$1" >ours.json || fail "info --json $1"
    qemu-img info --output=json "$1" >qemu.json
    $IMGCMP info ours.json qemu.json || fail "info $1 differs"
    img info --output=json "$1" | cmp -s - ours.json ||
        fail "--output=json differs from --json"
    img info "$1" >ours.txt || fail "info $1"
    # The text too, but for LUKS details diskserve-img does not print.
    if [ "${2:-}" != no-text ]; then
        qemu-img info "$1" >qemu.txt
        cmp -s ours.txt qemu.txt || {
            diff ours.txt qemu.txt >&2
            fail "text info $1 differs"
        }
    fi
}

qemu-img create -q -f raw raw.img 10M
qemu-io -f raw -c "write -P 1 1M 64k" raw.img >/dev/null
agree raw.img

n=0
for o in "" compat=0.10 cluster_size=512 cluster_size=2M extended_l2=on \
         compression_type=zstd lazy_refcounts=on refcount_bits=1 \
         refcount_bits=64; do
    n=$((n + 1))
    qemu-img create -q -f qcow2 ${o:+-o "$o"} q$n.qcow2 100M
    qemu-io -c "write -P 1 0 1M" q$n.qcow2 >/dev/null
    agree q$n.qcow2
    # Ours agree too.
    img create -q -f qcow2 ${o:+-o "$o"} d$n.qcow2 3G
    agree d$n.qcow2
done

# Snapshots, with a VM state size and clock from the snapshot table.
qemu-img snapshot -c first q1.qcow2
qemu-io -c "write -P 2 0 64k" q1.qcow2 >/dev/null
qemu-img snapshot -c second q1.qcow2
agree q1.qcow2
grep -q "^Snapshot list:" ours.txt || fail "no snapshot list"
grep -q " second " ours.txt || fail "snapshot 'second' not listed"

# Backing chains: relative names, format recorded or not, missing file.
mkdir sub
qemu-img create -q -f qcow2 -b ../q1.qcow2 -F qcow2 sub/over.qcow2
agree sub/over.qcow2
grep -q "^backing file: ../q1.qcow2 (actual path: sub/../q1.qcow2)$" \
    ours.txt || fail "backing file line"
qemu-img create -q -f qcow2 -b raw.img -F raw over-raw.qcow2
agree over-raw.qcow2
qemu-img create -q -u -f qcow2 -b gone.qcow2 -F qcow2 orphan.qcow2 1G
agree orphan.qcow2

# External data file.
qemu-img create -q -f qcow2 -o data_file=ext.data ext.qcow2 64M
agree ext.qcow2
qemu-img create -q -f qcow2 -o data_file=extr.data,data_file_raw=on \
    extr.qcow2 64M
agree extr.qcow2

# LUKS: described without the key.
if qemu-img create -q -f qcow2 --object secret,id=s0,data=hunter2 \
       -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 \
       luks.qcow2 64M 2>/dev/null; then
    agree luks.qcow2 no-text
    grep -q "^encrypted: yes$" ours.txt || fail "no 'encrypted: yes'"
fi

# Dirty (a lazy-refcounts writer killed) and corrupt images.
qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 64M
qemu-io -c "write -P 1 0 1M" -c "sigraise 9" dirty.qcow2 >/dev/null 2>&1 ||
    true
agree dirty.qcow2
grep -q "^cleanly shut down: no$" ours.txt || fail "dirty not shown"
qemu-img create -q -f qcow2 corrupt.qcow2 64M
$POKE corrupt.qcow2 header >/dev/null
/usr/bin/python3 - corrupt.qcow2 <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(72)
    v = struct.unpack('>Q', f.read(8))[0] | 2
    f.seek(72)
    f.write(struct.pack('>Q', v))
PY
agree corrupt.qcow2
grep -q "^    corrupt: true$" ours.txt || fail "corrupt not shown"

# The text form carries the values (on top of matching qemu-img's).
agree d6.qcow2
for line in "file format: qcow2" "virtual size: 3 GiB (3221225472 bytes)" \
            "cluster_size: 65536" "    compat: 1.1" \
            "    lazy refcounts: false" "    compression type: zstd" \
            "    refcount bits: 16" "    extended l2: false"; do
    grep -qx "$line" ours.txt || fail "text info lacks '$line'"
done
echo OK
