#!/bin/sh
# Claim: a read-write open of a VHDX file with a pending log (the
# fixtures of vhdx-read-only-export-replays-pending-log.sh) replays it
# into the file: afterwards the file holds what QEMU's own replay gives
# (`qemu-img check -r all` on a copy), qemu-img check finds nothing to
# replay or repair, both headers are valid with LogGuid zero, sequence
# numbers one apart, and a FileWriteGuid other than before (the open
# changed the file).  A second read-write open with no write changes
# nothing (replay is done once).  A torn second entry (a data byte, a
# data sector's SequenceLow, the entry CRC, a foreign LogGuid) is never
# applied: the file then holds the first entry's replay.  A file
# shorter than FlushedFileOffset is refused read-write too, unchanged.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vhdx/vhdx-functions.sh"
require qemu-img timeout /usr/bin/python3 sha256sum cmp
HDR="/usr/bin/python3 $abs_top_srcdir/tests/vhdx/vhdxhdr.py"
. "$abs_top_srcdir/tests/vhdx/vhdx-log-fixtures.sh"

# open_rw IMG: serve IMG read-write, read it all, stop.
open_rw()
{
    ds_start "$(basename "$1")" -f vhdx "$1"
    qemu-img convert -q -f raw -O raw "$DS_URI" "$1.ds.raw" ||
        fail "$1: reading the export failed"
    ds_stop "$DS_PID" || fail "$1: server exit status $?"
}

# replayed IMG WANT: IMG (opened read-write before) holds WANT for qemu,
# checks clean without a replay, and has two current headers.
replayed()
{
    qemu-img check -f vhdx "$1" >"$1.after" 2>&1 || {
        cat "$1.after" >&2
        fail "$1: qemu-img check after our replay"
    }
    qemu-img convert -q -f vhdx -O raw "$1" "$1.after.raw"
    cmp "$1.after.raw" "$2" || fail "$1: file differs from QEMU's replay"
    cmp "$1.ds.raw" "$2" || fail "$1: export differs from QEMU's replay"
    $HDR "$1" >"$1.hdr"
    awk '$2 != "valid" || $6 != "00000000-0000-0000-0000-000000000000"' \
        "$1.hdr" | grep -q . && { cat "$1.hdr" >&2; fail "$1: headers"; }
    awk 'NR == 1 { s = $3; f = $4 } NR == 2 { d = $3 - s;
         if ((d != 1 && d != -1) || $4 != f) exit 1 }' "$1.hdr" ||
        { cat "$1.hdr" >&2; fail "$1: headers not both current"; }
}

good=$(make good)
oracle "$good"
$HDR "$good" >"$T/before.hdr"
open_rw "$good"
grep -F "into the file" "$T/good.vhdx.log" ||
    fail "no replay into the file logged"
replayed "$good" "$good.qemu.raw"
before=$(awk 'NR == 1 { print $4 }' "$T/before.hdr")
after=$(awk 'NR == 1 { print $4 }' "$good.hdr")
[ "$before" != "$after" ] || fail "FileWriteGuid unchanged by the replay"
echo "good: file = QEMU's replay; FileWriteGuid $before -> $after"

sum=$(sha256sum <"$good")
open_rw "$good"
[ "$(sha256sum <"$good")" = "$sum" ] ||
    fail "a second open without writes changed the file"
cmp "$good.ds.raw" "$good.qemu.raw" || fail "second open reads otherwise"
echo "second open: nothing replayed, file unchanged"

first="$T/first.vhdx"
first_entry_only "$first"
oracle "$first"
for v in data seq crc guid; do
    if [ $v = guid ]; then
        img=$(make torn-guid "" $OTHER)
    else
        img=$(make torn-$v $v)
    fi
    open_rw "$img"
    replayed "$img" "$first.qemu.raw"
    echo "torn ($v): entry 11 not applied"
done

img="$T/truncated.vhdx"
cp "$base" "$img"
$LOG guid "$img" $GUID
$LOG entry "$img" 0 10 0 $GUID $((eof + 1048576)) $((eof + 1048576)) \
    data:$((b2 + 8192)):1
sum=$(sha256sum <"$img")
refused "$img" "shorter than the log's FlushedFileOffset $((eof + 1048576))" \
    -f vhdx
[ "$(sha256sum <"$img")" = "$sum" ] || fail "$img: changed by the refusal"
