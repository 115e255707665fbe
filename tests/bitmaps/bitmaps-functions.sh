# Helpers for the dirty bitmap tests, sourced after tests/functions.sh.
#
# The oracle is qemu: images and their bitmaps are made with qemu-img and
# qemu-io, and what a bitmap holds is what qemu-nbd exports for it, read
# with nbdinfo --map.

require qemu-img qemu-io qemu-nbd nbdinfo /usr/bin/python3
PROBE="$abs_top_builddir/tests/bitmaps/bitmap-probe"
BMPOKE="/usr/bin/python3 $abs_top_srcdir/tests/bitmaps/bmpoke.py"

# merge_runs: "OFFSET LENGTH" lines in, adjacent runs merged.
merge_runs()
{
    awk 'NF >= 2 {
            if (n && $1 == s + l) { l += $2; next }
            if (n) print s, l
            s = $1; l = $2; n = 1
         }
         END { if (n) print s, l }'
}

# qemu_map IMAGE NAME: the dirty runs of bitmap NAME as qemu-nbd exports
# them, one "OFFSET LENGTH" per run.
qemu_map()
{
    qemu_nbd_start "qmap-$2" -r -f qcow2 -B "$2" "$1"
    nbdinfo --map="qemu:dirty-bitmap:$2" "$QN_URI" >"$T/qmap.out" ||
        fail "nbdinfo --map of bitmap $2 failed"
    kill "$QN_PID"
    wait "$QN_PID" 2>/dev/null || true
    awk '$3 == 1 { print $1, $2 }' "$T/qmap.out" | merge_runs
}

# probe_map IMAGE NAME: the same through our driver.
probe_map()
{
    "$PROBE" "$1" map "$2" | merge_runs
}

# maps_agree IMAGE NAME...: for each bitmap, both maps are equal (and, to
# show that the comparison means something, not empty).
maps_agree()
{
    local f=$1 b
    shift
    for b in "$@"; do
        qemu_map "$f" "$b" >"$T/q-$b.map"
        probe_map "$f" "$b" >"$T/p-$b.map" || fail "bitmap-probe map $b failed"
        [ -s "$T/q-$b.map" ] || fail "qemu-nbd shows bitmap $b empty"
        diff -u "$T/q-$b.map" "$T/p-$b.map" >&2 ||
            fail "bitmap $b: our dirty runs differ from qemu-nbd's"
    done
}

# qemu_bitmap_flags IMAGE NAME: the flags qemu-img info lists for bitmap
# NAME, comma separated ("auto", "in-use"), or "missing".
qemu_bitmap_flags()
{
    qemu-img info --output=json "$1" | /usr/bin/python3 -c '
import json, sys
info = json.load(sys.stdin)
bms = info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
for b in bms:
    if b["name"] == sys.argv[1]:
        print(",".join(b["flags"]) or "none", b["granularity"])
        break
else:
    print("missing")
' "$2"
}

# qemu_clean FILE: qemu-img check must find nothing.
qemu_clean()
{
    qemu-img check "$1" >"$T/qemu-clean.out" 2>&1 ||
        { cat "$T/qemu-clean.out" >&2; fail "qemu-img check $1 not clean"; }
}
