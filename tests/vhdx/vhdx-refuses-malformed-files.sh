#!/bin/sh
# Claim: a VHDX file with one corrupt header still opens (from the other
# header) and serves the right data; files with both headers corrupt, the
# BAT region outside the file, overlapping regions, an unknown required
# region, BlockSize 3 MiB, LogicalSectorSize 1024, VirtualDiskSize not a
# multiple of the sector size, a payload block past the end of the file,
# the HasParent flag without a parent locator, or a LogGuid set
# over a log with no valid entry ([MS-VHDX] 2.3.3: corrupt) are refused when diskserve starts, with
# one line naming the file, the field and the value; the process exits
# with status 1, never by a signal.
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img timeout nbdinfo /usr/bin/python3
POKE="/usr/bin/python3 $abs_top_srcdir/tests/vhdx/vhdxpoke.py"

raw="$T/src.raw"
truncate -s 16M "$raw"
head -c 3M /dev/urandom | dd of="$raw" bs=1M seek=2 conv=notrunc 2>/dev/null
good="$T/good.vhdx"
qemu-img convert -q -f raw -O vhdx -o block_size=1M "$raw" "$good"

n=0
# bad NAME: copy the good file to $T/NAME.vhdx and print its path.
bad()
{
    cp "$good" "$T/$1.vhdx"
    echo "$T/$1.vhdx"
}

# refused IMAGE MESSAGE [diskserve options]: diskserve must refuse IMAGE
# with one line holding the image's name and MESSAGE.
refused()
{
    local img=$1 msg=$2
    shift 2
    local rc=0
    [ $# -gt 0 ] || set -- -r
    timeout 10 "$DISKSERVE" "$@" -k "$T/never.sock" "$img" \
        >"$T/out" 2>&1 || rc=$?
    [ $rc -eq 1 ] || {
        cat "$T/out" >&2
        fail "$img: exit status $rc, expected 1"
    }
    [ "$(grep -cF "$msg" "$T/out")" = 1 ] &&
        grep -F "$msg" "$T/out" | grep -qF "vhdx: $img:" || {
        cat "$T/out" >&2
        fail "$img: no one line naming the file with '$msg'"
    }
    n=$((n + 1))
    echo "refused: $(basename "$img"): $(grep -F "$msg" "$T/out")"
}

# opens IMAGE: served read-only with the source's bytes.
opens()
{
    ds_start "$(basename "$1")" -r "$1"
    qemu-img compare -q -f raw -F raw "$raw" "$DS_URI" ||
        fail "$1: export differs from the source"
    ds_stop "$DS_PID" || fail "$1: server exit status $?"
    echo "opens: $(basename "$1")"
}

opens "$good"

# One header with a bad checksum: the other one is current.
img=$(bad header1-bad); $POKE set "$img" $((65536 + 100)) B 0x5a
opens "$img"
img=$(bad header2-bad); $POKE set "$img" $((131072 + 8)) Q 0x7777
opens "$img"
img=$(bad headers-bad)
$POKE set "$img" $((65536 + 100)) B 0x5a
$POKE set "$img" $((131072 + 0)) I 0
refused "$img" "no valid header: header 1 (at 64 KB): bad checksum; header 2 (at 128 KB): bad signature"

# LogGuid set in both headers (checksums fixed) over an empty log.
img=$(bad logguid)
for h in 1 2; do
    $POKE set "$img" $((h * 65536 + 48)) guid 01234567-89ab-cdef-0123-456789abcdef
    $POKE fix "$img" header$h
done
refused "$img" "LogGuid 01234567-89AB-CDEF-0123-456789ABCDEF is set but the log holds no valid entry sequence"

set -- $($POKE region "$good" bat)
bat_off=$1 bat_entry=$3
set -- $($POKE region "$good" metadata)
meta_off=$1 meta_entry=$3

# region_set IMAGE OFFSET FMT VALUE: change region table 1 and fix it;
# break copy 2 so it cannot stand in.
region_set()
{
    $POKE set "$1" "$2" "$3" "$4"
    $POKE fix "$1" region1
    $POKE set "$1" $((256 * 1024)) I 0
}

img=$(bad bat-outside)
region_set "$img" $((bat_entry + 16)) Q $((1 << 40))
refused "$img" "region 2DC27766-F623-4200-9D64-115E9BFD4A08 at 0x10000000000 (1048576 bytes) outside the file"

img=$(bad regions-overlap)
region_set "$img" $((bat_entry + 16)) Q "$meta_off"
refused "$img" "region 2DC27766-F623-4200-9D64-115E9BFD4A08 at 0x$(printf %x "$meta_off") overlaps region 8B7CA206-4790-4B9A-B8FE-575F050F886E"

img=$(bad unknown-required)
region_set "$img" "$meta_entry" guid 11111111-2222-3333-4444-555555555555
$POKE set "$img" $((meta_entry + 28)) I 1
$POKE fix "$img" region1
refused "$img" "unknown region 11111111-2222-3333-4444-555555555555 is marked required"

# Both copies bad: refused, naming each.
img=$(bad regions-bad)
$POKE set "$img" $((192 * 1024 + 40)) B 0x33
$POKE set "$img" $((256 * 1024 + 40)) B 0x33
refused "$img" "no valid region table: copy 1 (at 192 KB): bad checksum; copy 2 (at 256 KB): bad checksum"

# One bad copy: the other serves.
img=$(bad region1-bad); $POKE set "$img" $((192 * 1024 + 40)) B 0x33
opens "$img"

fp=$($POKE item "$good" file_param)
img=$(bad bs3m); $POKE set "$img" "$fp" I $((3 << 20))
refused "$img" "BlockSize 3145728 is not a power of 2 between 1 MB and 256 MB"
img=$(bad bs512m); $POKE set "$img" "$fp" I $((512 << 20))
refused "$img" "BlockSize 536870912 is not a power of 2"
img=$(bad has-parent); $POKE set "$img" $((fp + 4)) I 2
refused "$img" "HasParent is set but the Parent Locator item is missing"

img=$(bad lss1024); $POKE set "$img" "$($POKE item "$good" logical)" I 1024
refused "$img" "LogicalSectorSize 1024 is not 512 or 4096"
img=$(bad pss1024); $POKE set "$img" "$($POKE item "$good" physical)" I 1024
refused "$img" "PhysicalSectorSize 1024 is not 512 or 4096"
img=$(bad size-odd); $POKE set "$img" "$($POKE item "$good" disk_size)" Q 1000
refused "$img" "VirtualDiskSize 1000 is not a multiple of LogicalSectorSize 512"
img=$(bad size-huge)
$POKE set "$img" "$($POKE item "$good" disk_size)" Q $((1 << 50))
refused "$img" "VirtualDiskSize 1125899906842624 exceeds 64 TB"
img=$(bad size-big-for-bat)
$POKE set "$img" "$($POKE item "$good" disk_size)" Q $((1 << 40))
refused "$img" "BAT region Length 1048576 too small for 1048831 entries"

# BAT entry 2 (payload block 2 holds data): past the end of the file,
# onto the metadata region, reserved state 4.
img=$(bad block-past-eof); $POKE set "$img" $((bat_off + 16)) Q $(((1 << 40) | 6))
refused "$img" "BAT entry 2: payload block at 0x10000000000 (1048576 bytes) outside the file"
img=$(bad block-on-metadata); $POKE set "$img" $((bat_off + 16)) Q $((meta_off | 6))
refused "$img" "BAT entry 2: payload block at 0x$(printf %x "$meta_off") overlaps"
img=$(bad block-state4); $POKE set "$img" $((bat_off + 16)) Q 4
refused "$img" "BAT entry 2: reserved state 4"

img=$(bad truncated); truncate -s 300K "$img"
refused "$img" "shorter than the 1 MB header section"
img=$(bad not-vhdx); $POKE set "$img" 0 Q 0
refused "$img" "signature is not \"vhdxfile\"" -r -f vhdx

echo "$n malformed files refused"
