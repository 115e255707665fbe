#!/bin/sh
# Claim: malformed qcow2 images (truncated header, bad magic or version,
# cluster_bits 8 or 22, L1 table past the end of the file or unaligned,
# absurd or too small l1_size, unknown incompatible feature bits, bad
# refcount_order, compression type or header length, overlapping tables,
# a snapshot table past the end, backing loops and chains too deep) are
# refused when diskserve starts, with one line naming the file, the field
# and the value; the process exits with status 1, never by a signal.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"
require timeout
POKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"

good="$T/good.qcow2"
qemu-img create -q -f qcow2 "$good" 16M
qio "$good" "write -s $(stamp 1 0 1M) 0 1M"

n=0
# bad NAME: copy the good image to $T/NAME.qcow2 and print its path.
bad()
{
    cp "$good" "$T/$1.qcow2"
    echo "$T/$1.qcow2"
}

# refused IMAGE MESSAGE [diskserve options]: diskserve must refuse IMAGE
# with a line holding the image's name and MESSAGE.
refused()
{
    local img=$1 msg=$2
    shift 2
    local rc=0
    timeout 10 "$DISKSERVE" -r "$@" -k "$T/never.sock" "$img" \
        >"$T/out" 2>&1 || rc=$?
    [ $rc -eq 1 ] || {
        cat "$T/out" >&2
        fail "$img: exit status $rc, expected 1"
    }
    grep -F "$msg" "$T/out" | grep -qF "${NAMED:-$img}" || {
        cat "$T/out" >&2
        fail "$img: no line naming the file with '$msg'"
    }
    n=$((n + 1))
    echo "refused: $(basename "$img"): $(grep -F "$msg" "$T/out")"
}

# The L1 table of this image starts at 0x30000 and has one entry.
[ "$($POKE get "$good" 40 '>Q')" = $((0x30000)) ] ||
    fail "unexpected qemu-img layout"

head -c 50 "$good" >"$T/trunc50.qcow2"
refused "$T/trunc50.qcow2" "truncated header: file is 50 bytes"
head -c 90 "$good" >"$T/trunc90.qcow2"
refused "$T/trunc90.qcow2" "truncated header: file is 90 bytes"

img=$(bad magic); $POKE set "$img" 0 '>I' 0x514649fa
refused "$img" "bad magic 0x514649fa" -f qcow2

img=$(bad version); $POKE set "$img" 4 '>I' 4
refused "$img" "unsupported version 4"

img=$(bad cb8); $POKE set "$img" 20 '>I' 8
refused "$img" "cluster_bits 8 out of range (9..21)"
img=$(bad cb22); $POKE set "$img" 20 '>I' 22
refused "$img" "cluster_bits 22 out of range (9..21)"

img=$(bad l1-past-eof); $POKE set "$img" 40 '>Q' 0x40000000
refused "$img" "L1 table offset 0x40000000 (8 bytes) past end of file"
img=$(bad l1-unaligned); $POKE set "$img" 40 '>Q' 0x30200
refused "$img" "L1 table offset 0x30200 not cluster aligned"

img=$(bad l1-absurd); $POKE set "$img" 36 '>I' 0x7fffffff
refused "$img" "l1_size 2147483647 too large (max 4194304)"
img=$(bad l1-small); $POKE set "$img" 36 '>I' 0
refused "$img" "l1_size 0 too small for size 16777216 (needs 1)"

# Unknown incompatible bits: named from the feature name table when it
# has the bit, by number otherwise.
img=$(bad incompat5); $POKE set "$img" 72 '>Q' 0x20
$POKE feature "$img" 0 5 frobnicated
refused "$img" "unsupported incompatible features 0x20: bit 5 (frobnicated)"
img=$(bad incompat40); $POKE set "$img" 72 '>Q' 0x10000000000
refused "$img" "unsupported incompatible features 0x10000000000: bit 40"

img=$(bad refcount-order); $POKE set "$img" 96 '>I' 7
refused "$img" "refcount_order 7 too large (max 6)"

img=$(bad header-length); $POKE set "$img" 100 '>I' 131072
refused "$img" "header_length 131072 larger than the cluster size 65536"

img=$(bad compression); $POKE set "$img" 104 B 2
$POKE set "$img" 72 '>Q' 8
refused "$img" "unknown compression_type 2"
img=$(bad compression-bit); $POKE set "$img" 104 B 1
refused "$img" "compression_type 1 does not agree with incompatible bit 3"

img=$(bad overlap); $POKE set "$img" 48 '>Q' 0x30000
refused "$img" "overlaps"

img=$(bad reftable-zero); $POKE set "$img" 56 '>I' 0
refused "$img" "refcount_table_clusters 0"

img=$(bad snapshots-past-eof)
$POKE set "$img" 60 '>I' 1
$POKE set "$img" 64 '>Q' 0x40000000
refused "$img" "snapshot 0 at 0x40000000 runs past end of file"

img=$(bad crypt); $POKE set "$img" 32 '>I' 3
refused "$img" "unknown crypt_method 3"

# Backing loops: a -> b -> a, and an image that is its own backing file.
qemu-img create -q -f qcow2 "$T/loop-b.qcow2" 16M
qemu-img create -q -f qcow2 -b "$T/loop-b.qcow2" -F qcow2 "$T/loop-a.qcow2"
qemu-img rebase -q -u -b "$T/loop-a.qcow2" -F qcow2 "$T/loop-b.qcow2"
refused "$T/loop-a.qcow2" "loops back to an image already in the chain"
qemu-img create -q -f qcow2 "$T/self.qcow2" 16M
qemu-img rebase -q -u -b "$T/self.qcow2" -F qcow2 "$T/self.qcow2"
refused "$T/self.qcow2" "loops back to an image already in the chain"

# An image over 33 backing files is refused at the 33rd: the line names
# the image whose backing file would be one too many.
qemu-img create -q -f qcow2 "$T/chain0.qcow2" 1M
for i in $(seq 1 33); do
    qemu-img create -q -f qcow2 -b "chain$((i - 1)).qcow2" -F qcow2 \
        "$T/chain$i.qcow2"
done
NAMED="$T/chain1.qcow2" refused "$T/chain33.qcow2" \
    "backing chain has more than 32 backing files"
# ... while an image over 32 backing files is served.
ds_start chain32 -r "$T/chain32.qcow2"
[ "$(nbdinfo --size "$DS_URI")" = 1048576 ] || fail "32-level chain"
ds_stop "$DS_PID"

img=$(bad missing-backing)
qemu-img rebase -q -u -b "$T/nonexistent.qcow2" -F qcow2 "$img"
refused "$img" "backing file '$T/nonexistent.qcow2': No such file"

# A corrupt image is served read-only and refused for writing; a dirty
# one is served either way, for writing only after its refcounts were
# repaired.
for bit in dirty:1 corrupt:2; do
    img=$(bad "${bit%:*}"); $POKE set "$img" 72 '>Q' "${bit#*:}"
    if [ "${bit%:*}" = corrupt ]; then
        rc=0
        timeout 10 "$DISKSERVE" -k "$T/never.sock" "$img" >"$T/out" 2>&1 ||
            rc=$?
        [ $rc -eq 1 ] || fail "$img opened for writing (status $rc)"
        grep -q "marked corrupt" "$T/out" || fail "corrupt: $(cat "$T/out")"
    fi
    ds_start "${bit%:*}" -r "$img"
    qemu-img compare -f qcow2 -F raw "$good" "$DS_URI" >/dev/null ||
        fail "${bit%:*} image does not read right read-only"
    ds_stop "$DS_PID"
done
ds_start dirty-rw "$T/dirty.qcow2"
grep -q "image is dirty.*repairing" "$T/dirty-rw.log" ||
    fail "dirty image opened for writing without a repair"
qemu-img compare -f qcow2 -F raw "$good" "$DS_URI" >/dev/null ||
    fail "repaired dirty image does not read right"
ds_stop "$DS_PID" || fail "diskserve exited with an error"
qemu-img check -q "$T/dirty.qcow2" || fail "repaired image not clean"

echo "$n malformed images refused"
