#!/bin/sh
# Claim: a VHDX file whose log holds updates not yet applied (a
# qemu-made dynamic file, then a log appended by tests/vhdx/vhdxlog.py:
# a new current header with a LogGuid, and two entries in one sequence
# with data descriptors over payload sectors, a BAT sector making an
# absent block present past the end of the file, and a zero descriptor)
# is served read-only with the replayed content: the bytes equal what
# qemu-img gives after its own replay (`qemu-img check -r all` on a
# copy, then convert), and the file is not changed (sha256).  When the
# second entry is torn (one byte of a data sector changed, a data
# sector's SequenceLow wrong with the CRC fixed, a bad entry CRC, or a
# foreign LogGuid) it is never applied: only the first entry is, and
# QEMU's replay agrees (for the SequenceLow tear QEMU's replay fails and
# it refuses the file: it checks data sectors only while applying).  A file shorter than the head entry's
# FlushedFileOffset and a LogGuid with no valid sequence in the log are
# refused with one line.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/vhdx/vhdx-functions.sh"
require qemu-img timeout /usr/bin/python3 sha256sum cmp
. "$abs_top_srcdir/tests/vhdx/vhdx-log-fixtures.sh"

# served IMG: what diskserve -r serves, in IMG.ds.raw; the file unchanged.
served()
{
    local before after
    before=$(sha256sum <"$1")
    ds_start "$(basename "$1")" -r "$1"
    qemu-img convert -q -f raw -O raw "$DS_URI" "$1.ds.raw" ||
        fail "$1: reading the export failed"
    ds_stop "$DS_PID" || fail "$1: server exit status $?"
    after=$(sha256sum <"$1")
    [ "$before" = "$after" ] || fail "$1: diskserve changed the file"
    grep -F "replayed log entries" "$T/$(basename "$1").log" || true
}

good=$(make good)
oracle "$good"
# QEMU reports its replay on open as one repaired corruption.
grep -q "^ *1 corruptions" "$good.check" || {
    cat "$good.check" >&2
    fail "qemu-img check did not replay the log"
}
served "$good"
cmp "$good.ds.raw" "$good.qemu.raw" ||
    fail "replayed export differs from QEMU's replay"
cmp -s "$good.ds.raw" "$raw" && fail "the log changed nothing"
echo "good: served = QEMU's replay (qemu-img check:$(grep "corruptions" "$good.check"))"

# The first entry alone: what every torn variant must serve.
first="$T/first.vhdx"
first_entry_only "$first"
oracle "$first"
for v in data seq crc guid; do
    if [ $v = guid ]; then
        img=$(make torn-guid "" $OTHER)
    else
        img=$(make torn-$v $v)
    fi
    served "$img"
    cmp "$img.ds.raw" "$first.qemu.raw" ||
        fail "$img: torn entry applied (or first entry not)"
    if [ $v = seq ]; then
        # QEMU checks data sector sequence numbers only while replaying:
        # it takes entry 11 into the sequence, then fails and refuses.
        cp "$img" "$img.copy"
        if qemu-img check -r all "$img.copy" >"$img.check" 2>&1; then
            fail "$img: QEMU replayed a torn entry"
        fi
        echo "torn ($v): entry 11 not applied; QEMU refuses the file"
        continue
    fi
    oracle "$img"
    cmp "$img.qemu.raw" "$first.qemu.raw" ||
        fail "$img: QEMU's replay disagrees"
    echo "torn ($v): entry 11 not applied; QEMU agrees"
done

img="$T/truncated.vhdx"
cp "$base" "$img"
$LOG guid "$img" $GUID
$LOG entry "$img" 0 10 0 $GUID $((eof + 1048576)) $((eof + 1048576)) \
    data:$((b2 + 8192)):1
refused "$img" "shorter than the log's FlushedFileOffset $((eof + 1048576))"

img="$T/only-torn.vhdx"
cp "$base" "$img"
$LOG guid "$img" $GUID
$LOG entry "$img" 0 10 0 $GUID eof eof tear=data data:$((b2 + 8192)):1
refused "$img" "is set but the log holds no valid entry sequence"
