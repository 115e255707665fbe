#!/bin/sh
# diskserve-img bitmap does what qemu-img bitmap does to a copy of the
# same image, for every operation and for several in one call: the same
# exit status, the same bitmaps (name, granularity, flags) in qemu-img
# info, the same dirty runs exported by qemu-nbd, and a clean qemu-img
# check.  A call whose last operation fails changes nothing (ours are
# all or nothing), errors are one line, and an inconsistent bitmap can
# only be removed.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps/bitmaps-functions.sh"

ours="$T/ours.qcow2"
theirs="$T/theirs.qcow2"
qemu-img create -q -f qcow2 "$ours" 200M
qemu-img bitmap --add -g 512 "$ours" fine
qemu-io -c 'write 1000 3000' -c 'write 10M 100k' -c 'write 199M 1M' \
    "$ours" >/dev/null
cp "$ours" "$theirs"

# bitmaps FILE: "name granularity flags" per bitmap, then the runs.
bitmaps()
{
    qemu-img info --output=json "$1" | /usr/bin/python3 -c '
import json, sys
info = json.load(sys.stdin)
for b in info.get("format-specific", {}).get("data", {}).get("bitmaps", []):
    print(b["name"], b["granularity"], ",".join(b["flags"]))
' >"$T/list-$2"
    local b
    for b in $(awk '{ print $1 }' "$T/list-$2"); do
        echo "== $b"
        qemu_map "$1" "$b"
    done >"$T/maps-$2"
}

# both ARGS...: run the operations on both copies and compare.
both()
{
    local ro=0 rq=0
    "$DISKSERVE_IMG" bitmap "$@" "$ours" "$NAME" 2>"$T/ours.err" || ro=$?
    qemu-img bitmap "$@" "$theirs" "$NAME" 2>"$T/theirs.err" || rq=$?
    [ $ro = $rq ] || { cat "$T/ours.err" "$T/theirs.err" >&2;
                       fail "'$*': exit $ro, qemu-img $rq"; }
    [ $(wc -l <"$T/ours.err") -le 1 ] || fail "'$*': more than one line"
    qemu_clean "$ours"
    bitmaps "$ours" ours
    bitmaps "$theirs" theirs
    diff -u "$T/list-theirs" "$T/list-ours" >&2 ||
        fail "'$*': bitmaps differ from qemu-img's"
    diff -u "$T/maps-theirs" "$T/maps-ours" >&2 ||
        fail "'$*': dirty runs differ from qemu-img's"
    return $ro
}

NAME=d; both --add
grep -q '^d 65536 auto$' "$T/list-ours" || fail "default granularity not 64k"
NAME=c; both --add -g 1M --disable
NAME=s; both --add -g 4k
qemu-io -c 'write 50M 300k' -c 'write 120M 4k' "$ours" >/dev/null
qemu-io -c 'write 50M 300k' -c 'write 120M 4k' "$theirs" >/dev/null
NAME=c; both --merge fine
NAME=s; both --merge c
NAME=fine; both --disable
NAME=c; both --enable
NAME=s; both --clear
NAME=d; both --remove
NAME=n; both --add -g 512 --merge c --disable
NAME=fine; both --clear --enable
NAME=x; both --add --remove
grep -q '^c ' "$T/list-ours" || fail "bitmap list lost c"

# Errors: the same exit status (1), one line, our wording beside qemu's.
NAME=c; both --add && fail "duplicate add succeeded"
grep -q "Bitmap already exists: c" "$T/ours.err" ||
    fail "duplicate: $(cat "$T/ours.err")"
NAME=nosuch; both --remove && fail "removing a missing bitmap succeeded"
grep -q "Dirty bitmap 'nosuch' not found" "$T/ours.err" ||
    fail "missing: $(cat "$T/ours.err")"
NAME=g; both --add -g 1000 && fail "granularity 1000 accepted"
grep -q "Granularity must be power of 2" "$T/ours.err" ||
    fail "granularity: $(cat "$T/ours.err")"
NAME=c; both --merge nosuch && fail "merging a missing bitmap succeeded"

# All or nothing: qemu-img keeps the bitmap a failed call added; we
# keep nothing.
cp "$ours" "$T/before.qcow2"
bitmaps "$ours" before
rc=0
"$DISKSERVE_IMG" bitmap --add --merge nosuch "$ours" y 2>"$T/err" || rc=$?
[ $rc = 1 ] || fail "a failing call exit $rc"
[ $(wc -l <"$T/err") = 1 ] || fail "not one line: $(cat "$T/err")"
bitmaps "$ours" after
diff -u "$T/list-before" "$T/list-after" >&2 ||
    fail "a failed call changed the bitmaps"
diff -u "$T/maps-before" "$T/maps-after" >&2 ||
    fail "a failed call changed the runs"

# Names: 1023 bytes are fine, 1024 are not.
long=$(printf 'n%.0s' $(seq 1023))
"$DISKSERVE_IMG" bitmap --add "$ours" "$long" || fail "1023-byte name refused"
"$DISKSERVE_IMG" bitmap --add "$ours" "x$long" 2>"$T/err" &&
    fail "1024-byte name accepted"
grep -q "too long" "$T/err" || fail "long name: $(cat "$T/err")"
"$DISKSERVE_IMG" bitmap --remove "$ours" "$long" ||
    fail "removing the long name"

# Usage errors exit 2.
for args in "" "--add" "--add $ours" "-g 4k --clear $ours c" "--bogus $ours c" \
            "--add $ours c extra" "--add -g x $ours c"; do
    rc=0
    "$DISKSERVE_IMG" bitmap $args >/dev/null 2>"$T/err" || rc=$?
    [ $rc = 2 ] || fail "bitmap $args: exit $rc, expected 2"
    [ $(wc -l <"$T/err") = 1 ] || fail "bitmap $args: not one line"
done

# An inconsistent bitmap (in use on disk): only --remove works, and
# removing it leaves a clean image.
$BMPOKE entry "$ours" 0 flags 3
"$PROBE" "$ours" list >"$T/list"
grep -q '^fine 512 [0-9]* 0 1 1$' "$T/list" ||
    fail "in-use bitmap not inconsistent: $(cat "$T/list")"
for op in --clear --enable --disable "--merge c"; do
    "$DISKSERVE_IMG" bitmap $op "$ours" fine 2>"$T/err" &&
        fail "$op on an inconsistent bitmap succeeded"
    grep -q "inconsistent" "$T/err" || fail "$op: $(cat "$T/err")"
done
NAME=c
"$DISKSERVE_IMG" bitmap --merge fine "$ours" c 2>"$T/err" &&
    fail "merging from an inconsistent bitmap succeeded"
# Kept as found while other bitmaps change.
"$DISKSERVE_IMG" bitmap --clear "$ours" c ||
    fail "clear beside an inconsistent bitmap"
qemu_clean "$ours"
[ "$(qemu_bitmap_flags "$ours" fine)" = "in-use,auto 512" ] ||
    fail "inconsistent bitmap not kept as found: $(qemu_bitmap_flags "$ours" fine)"
"$DISKSERVE_IMG" bitmap --remove "$ours" fine ||
    fail "removing an inconsistent bitmap"
qemu_clean "$ours"
[ "$(qemu_bitmap_flags "$ours" fine)" = missing ] || fail "fine still there"
