#!/bin/sh
# Claim: `diskserve-img create -f vhdx` makes fixed and dynamic files
# with 512- and 4096-byte logical sectors and 1 or 32 MiB blocks that
# libvhdi opens with the asked size and sector size (and qemu-img, which
# refuses 4096-byte sectors, checks clean and reads as zeros for 512);
# diskserve advertises the logical sector size as the minimum block size
# and takes a random concurrent workload from three connections (most
# requests unaligned to the sector: the server reads, modifies and
# writes whole sectors for clients that did not agree to block sizes);
# afterwards libvhdi (and qemu-img, for 512) reads the shadow copy the
# clients kept, and qemu-img check is clean.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vhdx/vhdx-write-functions.sh"
require nbdinfo
size=$((40 << 20))

for geo in 512:dynamic:1 512:fixed:32 4096:dynamic:1 4096:dynamic:32 \
    4096:fixed:1; do
    IFS=: read -r sector sub bs <<EOT
$geo
EOT
    name="s$sector-$sub-$bs"
    img="$T/$name.vhdx"
    "$DISKSERVE_IMG" create -q -f vhdx -o subformat=$sub,block_size=${bs}M \
        -o logical_sector_size=$sector "$img" $size ||
        fail "$name: diskserve-img create"
    /usr/bin/python3 - "$img" $size $sector <<'PY' || fail "$name: libvhdi"
import pyvhdi, sys
f = pyvhdi.file()
f.open(sys.argv[1])
assert f.get_media_size() == int(sys.argv[2]), f.get_media_size()
assert f.bytes_per_sector == int(sys.argv[3]), f.bytes_per_sector
assert f.read_buffer_at_offset(1 << 20, 0) == bytes(1 << 20)
PY
    truncate -s $size "$T/$name.shadow"
    if [ $sector = 512 ]; then
        qemu-img check -q -f vhdx "$img" || fail "$name: qemu-img check (new)"
        qemu-img compare -q -f vhdx -F raw "$img" "$T/$name.shadow" ||
            fail "$name: a new file does not read as zeros in qemu"
    fi
    ds_start "probe-$name" -f vhdx "$img"
    nbdinfo --json "$DS_URI" >"$T/$name.info" || fail "$name: nbdinfo"
    ds_stop "$DS_PID" || fail "$name: server exit status $?"
    grep -q "\"block_size_minimum\": *$sector\b" "$T/$name.info" || {
        cat "$T/$name.info" >&2
        fail "$name: minimum block size is not $sector"
    }
    workload "$name" "$img" 3 "$T/$name.shadow" --ops 200 \
        --hot $((2 << 20)) --max-len $((160 << 10)) --inflight 8
    if [ $sector = 512 ]; then
        judge "$name" "$img" "$T/$name.shadow" qemu
    else
        judge "$name" "$img" "$T/$name.shadow"
    fi
    echo "ok: $name"
    rm -f "$img" "$T/$name.shadow"
done
