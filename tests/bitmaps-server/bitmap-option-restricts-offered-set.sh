#!/bin/bash
# -B/--bitmap NAME (repeatable) offers only the bitmaps named, as
# qemu-nbd's -B does; the same from a config file's bitmap keys (with the
# control socket's path from its [server] section).  A -B naming a bitmap
# the image does not have fails the start with one line on stderr, as
# does -B on a format without bitmaps.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps-server/bitmap-functions.sh"

img=$T/disk.qcow2
make_bitmap_image "$img"

contexts()
{
    nbdinfo --list "$1" |
        sed -n 's/^[[:space:]]*\(qemu:dirty-bitmap:.*\)/\1/p' |
        sort | tr '\n' ' '
}

ds_start all -r "$img"
got=$(contexts "$DS_URI")
all="qemu:dirty-bitmap:coarse qemu:dirty-bitmap:fine qemu:dirty-bitmap:mid "
[ "$got" = "$all" ] ||
    fail "without -B: offered '$got'"
ds_stop "$DS_PID"

ds_start one -r -B mid "$img"
got=$(contexts "$DS_URI")
[ "$got" = "qemu:dirty-bitmap:mid " ] || fail "-B mid: offered '$got'"
# The others cannot be selected either.
nbdinfo --map=qemu:dirty-bitmap:fine "$DS_URI" >/dev/null 2>&1 &&
    fail "-B mid: fine can still be mapped"
nbdinfo --map=qemu:dirty-bitmap:mid "$DS_URI" | grep -q dirty ||
    fail "-B mid: mid has no dirty extent"
ds_stop "$DS_PID"

ds_start two -r --bitmap coarse -B fine -B coarse "$img"
got=$(contexts "$DS_URI")
[ "$got" = "qemu:dirty-bitmap:coarse qemu:dirty-bitmap:fine " ] ||
    fail "-B coarse -B fine: offered '$got'"
ds_stop "$DS_PID"

cat >"$T/ds.conf" <<CONF
[server]
control = $T/ctl.sock

[export disk]
image = $img
read-only = yes
bitmap = fine
bitmap = mid
CONF
ds_start conf --config "$T/ds.conf"
got=$(contexts "nbd+unix:///disk?socket=$DS_SOCK")
[ "$got" = "qemu:dirty-bitmap:fine qemu:dirty-bitmap:mid " ] ||
    fail "config bitmap keys: offered '$got'"
[ -S "$T/ctl.sock" ] || fail "config control key: no socket"
[ "$(stat -c %a "$T/ctl.sock")" = 600 ] || fail "control socket mode"
ds_stop "$DS_PID"

# Refusals: exit status 1, exactly one line, naming the bitmap.
refused()
{
    local what=$1
    shift
    local rc=0
    "$DISKSERVE" -k "$T/refused.sock" "$@" >"$T/out" 2>"$T/err" || rc=$?
    [ "$rc" -ne 0 ] || fail "$what: started"
    [ ! -S "$T/refused.sock" ] || fail "$what: socket created"
    [ "$(wc -l <"$T/err")" -eq 1 ] ||
        fail "$what: stderr is not one line: $(cat "$T/err")"
}
refused "-B nope" -r -B mid -B nope "$img"
grep -q "nope" "$T/err" || fail "-B nope: message $(cat "$T/err")"
grep -q "not found" "$T/err" || fail "-B nope: message $(cat "$T/err")"
# qemu-nbd refuses it too.
qemu-nbd -r -B nope -k "$T/qn.sock" "$img" 2>/dev/null &&
    fail "qemu-nbd accepted -B nope"

truncate -s 1M "$T/disk.raw"
refused "-B on raw" -r -f raw -B mid "$T/disk.raw"
grep -q "mid" "$T/err" || fail "-B on raw: message $(cat "$T/err")"

sed -i 's/^bitmap = mid$/bitmap = gone/' "$T/ds.conf"
refused "config bitmap = gone" --config "$T/ds.conf"
grep -q "gone" "$T/err" || fail "config gone: message $(cat "$T/err")"
# -B belongs in the config file when one is used.
refused "-B with --config" --config "$T/ds.conf" -B fine
