# Helpers for the VHDX write tests, sourced after tests/functions.sh.
#
# The judges: qemu-img check finds nothing wrong (where QEMU can open
# the file: 512-byte logical sectors, no parent), qemu-img compare and
# libvhdi (tests/vhdx/vhdxcmp.py) read the file as a shadow raw file
# that the workload clients kept up to date request by request.

require qemu-img /usr/bin/python3
WORKLOAD="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2-write-workload.py"
VHDXCMP="/usr/bin/python3 $abs_top_srcdir/tests/vhdx/vhdxcmp.py"

SEED=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed: $SEED"

# judge NAME IMAGE SHADOW [qemu | PARENT...]: libvhdi reads IMAGE (with
# its PARENT chain) as SHADOW; with "qemu", qemu-img check is clean and
# qemu reads IMAGE as SHADOW too.
judge()
{
    local name=$1 img=$2 shadow=$3
    shift 3
    if [ "${1:-}" = qemu ]; then
        shift
        qemu-img check -f vhdx "$img" >"$T/$name.chk" 2>&1 || {
            cat "$T/$name.chk" >&2
            fail "$name: qemu-img check"
        }
        qemu-img compare -f vhdx -F raw "$img" "$shadow" \
            >"$T/$name.cmp" 2>&1 || {
            cat "$T/$name.cmp" >&2
            fail "$name: qemu reads something else than the shadow"
        }
    fi
    $VHDXCMP "$shadow" "$img" "$@" || fail "$name: libvhdi reads otherwise"
}

# workload NAME IMAGE CONNS SHADOW [workload options]: serve IMAGE
# read-write and run CONNS workload clients at once, each in its own
# slice of the disk (several requests in flight each), against SHADOW;
# the server must exit 0.
workload()
{
    local name=$1 img=$2 conns=$3 shadow=$4
    shift 4
    ds_start "ds-$name" -f vhdx "$img"
    local size i pids="" lo hi
    size=$(stat -c %s "$shadow")
    i=0
    while [ $i -lt "$conns" ]; do
        lo=$((size / conns * i / 4096 * 4096))
        hi=$((size / conns * (i + 1) / 4096 * 4096))
        [ $((i + 1)) -lt "$conns" ] || hi=$size
        $WORKLOAD "$DS_URI" "$shadow" --seed $((SEED + i)) --start $lo \
            --end $hi "$@" >"$T/$name.w$i" 2>&1 &
        pids="$pids $!"
        i=$((i + 1))
    done
    local bad=0
    for p in $pids; do
        wait "$p" || bad=1
    done
    cat "$T/$name".w*
    [ $bad = 0 ] || fail "$name: a workload client failed" \
        "(log: $(tail -3 "$T/ds-$name.log"))"
    ds_stop "$DS_PID" || fail "$name: diskserve exited with an error"
}

# map_matches NAME IMAGE SHADOW: every data extent `diskserve-img map`
# reports holds, at its offset in IMAGE, the shadow's bytes; every zero
# extent is zeros in the shadow; the extents tile the disk.
map_matches()
{
    local name=$1 img=$2 shadow=$3
    "$DISKSERVE_IMG" map --output=json "$img" >"$T/$name.map" ||
        fail "$name: diskserve-img map"
    /usr/bin/python3 - "$T/$name.map" "$img" "$shadow" <<'PY' ||
import json, sys
m = json.load(open(sys.argv[1]))
img, shadow = open(sys.argv[2], "rb"), open(sys.argv[3], "rb")
pos = 0
for e in m:
    assert e["start"] == pos, (e, pos)
    shadow.seek(e["start"])
    want = shadow.read(e["length"])
    if e["data"]:
        img.seek(e["offset"])
        got = img.read(e["length"])
    else:
        got = bytes(e["length"])
    assert got == want, "extent %r" % e
    pos += e["length"]
shadow.seek(0, 2)
assert pos == shadow.tell(), (pos, shadow.tell())
PY
        fail "$name: diskserve-img map disagrees with the shadow"
}
