#!/bin/bash
# diskserve-img bitmap --control PATH --node NAME runs the bitmap
# command's operations on a served image through the control socket, as
# one transaction: the same sequence of operations and writes, applied to
# one copy through a running diskserve and to another stopped, leaves
# bitmaps qemu-img describes identically and qemu-nbd maps identically.
# A failing call changes nothing and prints one line.
. "$abs_top_srcdir/tests/functions.sh"

qemu-img create -q -f qcow2 "$T/a.qcow2" 64M
qemu-io -f qcow2 -c "write -P 1 0 4m" "$T/a.qcow2" >/dev/null
cp "$T/a.qcow2" "$T/b.qcow2"

ds_start ds -f qcow2 -x disk --control "$T/ctl.sock" "$T/a.qcow2"
online() { "$DISKSERVE_IMG" bitmap --control "$T/ctl.sock" --node disk "$@"; }
both()
{
    online "$@" || fail "online $*"
    "$DISKSERVE_IMG" bitmap "${@:1:$#-1}" "$T/b.qcow2" "${@: -1}" ||
        fail "offline $*"
}
writes()
{
    qemu-io -f raw -c "$1" "nbd+unix:///disk?socket=$DS_SOCK" >/dev/null
    qemu-io -f qcow2 -c "$1" "$T/b.qcow2" >/dev/null
}

both --add -g 64k b1
writes "write -P 2 1m 4k"
both --add --disable b2
both --add -g 512 b3
writes "write -P 3 9m 100k"
both --merge b1 b3
writes "write -z 20m 1m"
both --clear b1
writes "write -P 4 30m 512"
both --disable --enable --disable b3
both --remove b2

# All or nothing, with one line: add b4, remove it, remove it again.
rc=0
online --add --remove --remove b4 2>"$T/err" || rc=$?
[ "$rc" = 1 ] || fail "failing transaction: exit $rc"
[ "$(wc -l <"$T/err")" = 1 ] || fail "not one line: $(cat "$T/err")"
rc=0
online --add -g 1000 b5 2>"$T/err" || rc=$?
[ "$rc" = 1 ] || fail "bad granularity: exit $rc"
rc=0
"$DISKSERVE_IMG" bitmap --control "$T/ctl.sock" --add b5 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--control without --node: exit $rc"
rc=0
"$DISKSERVE_IMG" bitmap --control "$T/nope.sock" --node disk --add b5 \
    2>/dev/null || rc=$?
[ "$rc" = 1 ] || fail "missing control socket: exit $rc"

nbdinfo --list "nbd+unix:///disk?socket=$DS_SOCK" |
    grep -q "qemu:dirty-bitmap:b4" &&
    fail "b4 offered after a failed transaction"
ds_stop "$DS_PID" || fail "server exit status $?"

describe()
{
    qemu-img info --output=json "$1" | /usr/bin/python3 -c '
import json, sys
info = json.load(sys.stdin)
for b in info["format-specific"]["data"].get("bitmaps", []):
    print(b["name"], b["granularity"], ",".join(sorted(b["flags"])))'
}
describe "$T/a.qcow2" >"$T/a.bitmaps"
describe "$T/b.qcow2" >"$T/b.bitmaps"
[ "$(cut -d' ' -f1 "$T/a.bitmaps" | sort | tr '\n' ' ')" = "b1 b3 " ] ||
    fail "bitmaps left: $(cat "$T/a.bitmaps")"
sort "$T/a.bitmaps" >"$T/a.sorted"
sort "$T/b.bitmaps" >"$T/b.sorted"
cmp -s "$T/a.sorted" "$T/b.sorted" ||
    fail "online $(cat "$T/a.sorted") offline $(cat "$T/b.sorted")"

for b in b1 b3; do
    for img in a b; do
        qemu_nbd_start "qn-$img-$b" -r -f qcow2 -B "$b" "$T/$img.qcow2"
        nbdinfo --map="qemu:dirty-bitmap:$b" "$QN_URI" >"$T/$img-$b.map"
        kill "$QN_PID"
    done
    cmp -s "$T/a-$b.map" "$T/b-$b.map" ||
        fail "$b maps differ: $(diff "$T/a-$b.map" "$T/b-$b.map")"
done
grep -q dirty "$T/a-b3.map" || fail "b3 has nothing dirty"
qemu-img check -q "$T/a.qcow2" || fail "qemu-img check"
