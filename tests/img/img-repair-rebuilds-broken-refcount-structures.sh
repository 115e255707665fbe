#!/bin/sh
# Claim: diskserve-img check -r all repairs images whose refcount
# structures are broken (a refcount table entry zeroed, unaligned, with
# reserved bits, past the end of the file, pointing at a data cluster or
# at another entry's block; a whole refcount block zeroed; a dirty
# lazy-refcounts image) by rebuilding them: afterwards qemu-img check
# finds nothing, the guest data is unchanged, the dirty bit is clear, and
# qemu can go on writing to the image.  Also with refcount tables of
# several clusters (512 B clusters) and at refcount widths 1 and 64.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"

# repaired NAME FILE: repair, then judge.
repaired()
{
    local rc=0
    img check -r all "$2" >"$T/out" 2>"$T/err" || rc=$?
    [ "$rc" = 0 ] || {
        cat "$T/out" "$T/err" >&2
        fail "$1: check -r all exit $rc"
    }
    qemu_clean "$2"
    qemu-img compare -q "$PRISTINE" "$2" || fail "$1: guest data changed"
    qemu-img info "$2" | grep -q "cleanly shut down: no" &&
        fail "$1: still dirty"
    qemu-io -c "write -P 0x77 20M 1M" -c "write -P 0x78 0 4k" "$2" \
        >/dev/null || fail "$1: qemu cannot write after the repair"
    qemu_clean "$2"
    img check "$2" >/dev/null || fail "$1: not clean for diskserve-img"
}

# broken NAME COMMAND...: repair a poked copy of the pristine image.
broken()
{
    local name=$1
    shift
    local f="$T/$name.qcow2"
    cp "$PRISTINE" "$f"
    "$@" "$f" >/dev/null
    rc=0
    img check "$f" >/dev/null 2>&1 || rc=$?
    [ "$rc" != 0 ] || fail "$name: fault not found"
    repaired "$name" "$f"
}

# Byte offsets of the first refcount block and of guest cluster 0.
block0() { echo $(( $($POKE "$1" block-cluster 0) * CS )); }
data0() { echo $(( $($POKE "$1" host-cluster 0) * CS )); }
zero_entry() { $POKE "$1" reftable 0 0; }
unaligned_entry() { $POKE "$1" reftable 0 $(( $(block0 "$1") + 512 )); }
reserved_entry() { $POKE "$1" reftable 0 $(( $(block0 "$1") + 1 )); }
entry_past_eof() { $POKE "$1" reftable 0 0x40000000; }
entry_on_data() { $POKE "$1" reftable 0 "$(data0 "$1")"; }
entry_twice() { $POKE "$1" reftable 1 "$(block0 "$1")"; }
zero_block() {
    dd if=/dev/zero of="$1" bs=$CS count=1 conv=notrunc \
       seek=$($POKE "$1" block-cluster 0) 2>/dev/null
}

for geometry in "16 65536 3M" "16 512 12M" "1 65536 3M" "64 512 3M"; do
    set -- $geometry
    rb=$1 CS=$2 fill=$3
    echo "refcount_bits=$rb cluster_size=$CS"
    PRISTINE="$T/pristine-$rb-$CS.qcow2"
    qemu-img create -q -f qcow2 -o refcount_bits=$rb,cluster_size=$CS \
        "$PRISTINE" 32M
    qemu-io -c "write -P 1 0 $fill" -c "write -c -P 2 14M 256k" \
        -c "write -z 16M 64k" "$PRISTINE" >/dev/null
    if [ "$rb" != 1 ]; then
        qemu-img snapshot -c snap "$PRISTINE"
        qemu-io -c "write -P 4 0 64k" "$PRISTINE" >/dev/null
    fi
    qemu_clean "$PRISTINE"

    broken zero-entry zero_entry
    broken unaligned-entry unaligned_entry
    broken reserved-entry reserved_entry
    broken entry-past-eof entry_past_eof
    broken entry-on-data entry_on_data
    broken zero-block zero_block
    # A second table entry naming the first entry's block.
    [ "$CS" != 512 ] || broken entry-twice entry_twice
done

# The rebuilt table covers several clusters when the file needs it.
f="$T/zero-entry.qcow2"
[ "$($POKE "$f" header | awk '$1 == "refcount_table_clusters" { print $2 }')" \
  -gt 1 ] || fail "expected a refcount table of several clusters"

# A writer killed with lazy refcounts: refcounts missing, dirty bit set.
PRISTINE="$T/lazy-pristine.qcow2"
f="$T/lazy.qcow2"
qemu-img create -q -f qcow2 -o lazy_refcounts=on "$f" 64M
qemu-io -c "write -P 1 0 3M" -c "write -P 2 10M 64k" -c "sigraise 9" \
    "$f" >/dev/null 2>&1 || true
qemu-img convert -O qcow2 "$f" "$PRISTINE"
repaired lazy "$f"
echo OK
