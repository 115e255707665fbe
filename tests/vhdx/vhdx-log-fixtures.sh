# Pending-log fixtures for the log replay tests, sourced after
# tests/functions.sh and vhdx-functions.sh: a qemu-made dynamic base
# ($base, from $raw) and make NAME [TEAR] [ENTRYGUID], which appends a
# two-entry log to a copy (see vhdx-read-only-export-replays-pending-log.sh
# for what the entries hold); oracle IMG puts QEMU's own replay of IMG
# in IMG.qemu.raw; first_entry_only IMG makes $base plus the first entry
# alone.
LOG="/usr/bin/python3 $abs_top_srcdir/tests/vhdx/vhdxlog.py"
GUID=0badc0de-1234-4321-8765-0123456789ab
OTHER=11111111-2222-3333-4444-555555555555
SEED=${SEED:-$(date +%s)}
echo "seed: $SEED"

raw="$T/src.raw"
truncate -s 16M "$raw"
/usr/bin/python3 -c '
import random, sys
r = random.Random(int(sys.argv[1]))
with open(sys.argv[2], "r+b") as f:
    f.seek(2 << 20)
    f.write(r.randbytes(3 << 20))
' "$SEED" "$raw"
base="$T/base.vhdx"
qemu-img convert -q -f raw -O vhdx -o subformat=dynamic,block_size=1M \
    "$raw" "$base"
set -- $($LOG info "$base")
bat=$3 size=$4
eof=$(( (size + 1048575) / 1048576 * 1048576 ))
# host BLOCK: the file offset of payload block BLOCK (present in base).
host()
{
    /usr/bin/python3 -c '
import struct, sys
with open(sys.argv[1], "rb") as f:
    f.seek(int(sys.argv[2]) + 8 * int(sys.argv[3]))
    e = struct.unpack("<Q", f.read(8))[0]
assert e & 7 == 6, "block not present"
print(e & ~0xFFFFF)
' "$base" "$bat" "$1"
}
b2=$(host 2) b3=$(host 3) b4=$(host 4)

# make NAME [TEAR] [ENTRYGUID]: base plus a two-entry log; TEAR and a
# foreign GUID go to the second entry.
make()
{
    local img="$T/$1.vhdx" tear=${2:+tear=$2} g2=${3:-$GUID}
    cp "$base" "$img"
    $LOG guid "$img" $GUID
    # Entry 10 (tail: itself): one payload sector.
    $LOG entry "$img" 0 10 0 $GUID eof eof data:$((b2 + 8192)):$((SEED + 1))
    # Entry 11 (tail: entry 10): overwrite that sector, another one, zero
    # 8 KiB of block 4, map absent block 7 at the end of the file, zero
    # 64 KiB over the sector written before and write inside that range
    # (later updates replace earlier ones), and put
    # two sectors of data in block 7, one its last: QEMU's replay does
    # not extend the file to LastFileOffset, and then refuses the BAT.
    $LOG entry "$img" 8192 11 0 "$g2" eof $((eof + 1048576)) $tear \
        data:$((b2 + 8192)):$((SEED + 2)) data:$b3:$((SEED + 3)) \
        zero:$((b4 + 4096)):8192 bat:7:$((eof | 6)) \
        zero:$((b3 - 4096)):65536 data:$((b3 + 8192)):$((SEED + 6)) \
        data:$((eof + 12288)):$((SEED + 4)) \
        data:$((eof + 1048576 - 4096)):$((SEED + 5))
    echo "$img"
}

# oracle IMG: QEMU's replay on a copy, then its bytes, in IMG.qemu.raw.
oracle()
{
    cp "$1" "$1.copy"
    qemu-img check -r all "$1.copy" >"$1.check" 2>&1 || true
    qemu-img convert -q -f vhdx -O raw "$1.copy" "$1.qemu.raw" || {
        cat "$1.check" >&2
        fail "$1: qemu cannot read its own replay"
    }
}

# first_entry_only IMG: base plus the first entry alone, what every
# torn variant must give.
first_entry_only()
{
    cp "$base" "$1"
    $LOG guid "$1" $GUID
    $LOG entry "$1" 0 10 0 $GUID eof eof data:$((b2 + 8192)):$((SEED + 1))
}
