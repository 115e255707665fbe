#!/bin/sh
# Claim: a bitmap directory whose first entry claims more extra data than
# the directory holds (0x1000 bytes, and 0xfffffff0, whose sum wraps a
# 32-bit length) is reported as a broken directory: diskserve-img check
# and check -r all exit 1 as qemu-img check does (it refuses to open the
# image), say why, never read past the directory (issue 13: a heap
# over-read, then a crash), and a repair leaves the file untouched.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"
QPOKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"

base="$T/base.qcow2"
qemu-img create -q -f qcow2 "$base" 16M
qemu-io -c "write -P 1 0 64k" "$base" >/dev/null
qemu-img bitmap --add "$base" b1
qemu-img bitmap --add "$base" b2
qemu_clean "$base"

# The bitmaps header extension: walk the extension list after the
# header to find the directory offset.
magic_bitmaps=$((0x23852875))
ext=$($QPOKE get "$base" 100 '>I')
dir=
while :; do
    m=$($QPOKE get "$base" "$ext" '>I')
    len=$($QPOKE get "$base" $((ext + 4)) '>I')
    [ "$m" != 0 ] || break
    if [ "$m" = "$magic_bitmaps" ]; then
        dir=$($QPOKE get "$base" $((ext + 24)) '>Q')
        break
    fi
    ext=$((ext + 8 + (len + 7) / 8 * 8))
done
[ -n "$dir" ] || fail "no bitmaps extension in $base"

for extra in 0x1000 0xfffffff0; do
    f="$T/extra-$extra.qcow2"
    cp "$base" "$f"
    # extra_data_size is at byte 20 of the first directory entry.
    $QPOKE set "$f" $((dir + 20)) '>I' "$extra"

    rq=0
    qemu-img check "$f" >"$T/qemu.out" 2>&1 || rq=$?
    for mode in "" "-r leaks" "-r all"; do
        cp "$f" "$T/ours.qcow2"
        ro=0
        img check $mode "$T/ours.qcow2" >"$T/ours.out" 2>"$T/ours.err" ||
            ro=$?
        if [ "$ro" != "$rq" ]; then
            cat "$T/ours.out" "$T/ours.err" "$T/qemu.out" >&2
            fail "extra_data_size $extra: check $mode exit $ro," \
                 "qemu-img check $rq"
        fi
        grep -q "bitmap directory entry 0 .* runs past the end of the" \
            "$T/ours.err" ||
            { cat "$T/ours.err" >&2;
              fail "extra_data_size $extra: check $mode: no diagnosis"; }
        cmp -s "$f" "$T/ours.qcow2" ||
            fail "extra_data_size $extra: check $mode changed the file"
    done
    echo "extra_data_size $extra: exit $rq, as qemu-img"
done
echo OK
