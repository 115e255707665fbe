#!/bin/sh
# Claim: a repair interrupted at any point loses no data.  diskserve-img
# check -r all runs with the I/O log on (tests/crash) on broken images:
# refcount structures to rebuild (64 KiB and 512 B clusters), leaks,
# errors and COPIED flags fixed in place, a dirty lazy-refcounts image.
# In every crash state the log allows, the guest data reads as before
# (qemu-img compare), qemu-img check runs to completion, and a second
# repair leaves an image qemu-img check finds clean.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"

REPLAY="$abs_top_builddir/tests/crash/crash-replay"
[ -x "$REPLAY" ] || fail "$REPLAY not built"
MAX_STATES=${MAX_STATES:-60}

# crash_repair NAME BROKEN PRISTINE: repair BROKEN with the log on, then
# judge a spread of the crash states.
crash_repair()
{
    local name=$1 broken=$2 pristine=$3
    local dir="$T/$name"
    mkdir "$dir"
    cp "$broken" "$dir/img.qcow2"
    DISKSERVE_IO_LOG="$dir/io.log" img check -r all "$dir/img.qcow2" \
        >"$dir/repair.out" 2>&1 || fail "$name: repair failed"
    qemu_clean "$dir/img.qcow2"
    local logged
    logged=$("$REPLAY" "$dir/io.log" --dump |
             awk '$2 == "file" { print $5; exit }')
    "$REPLAY" "$dir/io.log" --states >"$dir/states"
    local total step
    total=$(wc -l <"$dir/states")
    step=$(( (total + MAX_STATES - 1) / MAX_STATES ))
    echo "$name: $total states, checking every ${step}th"
    awk -v s="$step" '(NR - 1) % s == 0' "$dir/states" >"$dir/checked"
    local n=0 spec rc
    while read -r spec; do
        n=$((n + 1))
        local st="$dir/s$n"
        mkdir "$st"
        "$REPLAY" "$dir/io.log" --initial "$logged=$broken" \
            --state "$spec" --out "$st" || fail "$name: replay $spec"
        qemu-img compare -q "$pristine" "$st/img.qcow2" ||
            fail "$name: state $spec: guest data changed"
        rc=0
        qemu-img check "$st/img.qcow2" >/dev/null 2>&1 || rc=$?
        [ "$rc" != 1 ] || fail "$name: state $spec: qemu-img check failed"
        rc=0
        img check -r all "$st/img.qcow2" >"$st/out" 2>&1 || rc=$?
        [ "$rc" = 0 ] || {
            cat "$st/out" >&2
            fail "$name: state $spec: second repair exit $rc"
        }
        qemu-img check "$st/img.qcow2" >"$st/qemu.out" 2>&1 || {
            cat "$st/qemu.out" >&2
            fail "$name: state $spec: not clean after a second repair"
        }
        qemu-img compare -q "$pristine" "$st/img.qcow2" ||
            fail "$name: state $spec: second repair changed the data"
        rm -rf "$st"
    done <"$dir/checked"
}

# A base image: data, a snapshot, compressed and zero clusters.
base()
{
    qemu-img create -q -f qcow2 -o cluster_size=$2 "$1" 32M
    qemu-io -c "write -P 1 0 $3" -c "write -c -P 2 14M 256k" \
        -c "write -z 16M 64k" "$1" >/dev/null
    qemu-img snapshot -c snap "$1"
    qemu-io -c "write -P 4 0 64k" -c "write -P 5 20M 128k" "$1" >/dev/null
}

# Rebuild: the refcount table's first entry is gone.
base "$T/p64k.qcow2" 65536 3M
cp "$T/p64k.qcow2" "$T/rebuild.qcow2"
$POKE "$T/rebuild.qcow2" reftable 0 0 >/dev/null
crash_repair rebuild "$T/rebuild.qcow2" "$T/p64k.qcow2"

# Rebuild with 512 B clusters: blocks and a table of several clusters.
base "$T/p512.qcow2" 512 5M
cp "$T/p512.qcow2" "$T/rebuild512.qcow2"
$POKE "$T/rebuild512.qcow2" reftable 1 0 >/dev/null
crash_repair rebuild512 "$T/rebuild512.qcow2" "$T/p512.qcow2"

# In place: a leak, an error, COPIED flags in L1 and L2.
cp "$T/p64k.qcow2" "$T/inplace.qcow2"
f="$T/inplace.qcow2"
$POKE "$f" refcount $($POKE "$f" host-cluster 0) 3 >/dev/null
$POKE "$f" refcount $($POKE "$f" host-cluster $((20 << 20))) 0 >/dev/null
$POKE "$f" l1-bit 0 63 0 >/dev/null
$POKE "$f" l2-bit $((20 << 20)) 63 0 >/dev/null
crash_repair inplace "$f" "$T/p64k.qcow2"

# A writer killed with lazy refcounts.
f="$T/lazy.qcow2"
qemu-img create -q -f qcow2 -o lazy_refcounts=on "$f" 64M
qemu-io -c "write -P 1 0 3M" -c "write -P 2 10M 64k" -c "sigraise 9" \
    "$f" >/dev/null 2>&1 || true
qemu-img convert -O qcow2 "$f" "$T/lazy-data.qcow2"
crash_repair lazy "$f" "$T/lazy-data.qcow2"
echo OK
