#!/bin/sh
# In plain mode (the default, qemu's way), while a read-write open is
# under way, the enabled stored bitmaps are flagged
# in use on disk (before any write can land) and the disabled
# ones are not.  After a crash (kill -9) the enabled ones read as
# inconsistent, as in qemu: listed, never exported by qemu-nbd, removable;
# the disabled one is intact and exported.  A clean close clears the
# flags again.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps/bitmaps-functions.sh"

f="$T/a.qcow2"
qemu-img create -q -f qcow2 "$f" 64M
qemu-img bitmap --add -g 64k "$f" on
qemu-img bitmap --add -g 64k --disable "$f" off
qemu-io -c 'write 0 64k' "$f" >/dev/null
qemu-img bitmap --enable "$f" off
qemu-io -c 'write 1M 64k' "$f" >/dev/null
qemu-img bitmap --disable "$f" off
qemu_map "$f" off >"$T/off.before"

"$PROBE" -w "$f" sleep 30 &
pid=$!
_ds_pids="$_ds_pids $pid"
for _ in $(seq 100); do
    [ "$(qemu_bitmap_flags "$f" on)" = "in-use,auto 65536" ] && break
    sleep 0.1
done
[ "$(qemu_bitmap_flags "$f" on)" = "in-use,auto 65536" ] ||
    fail "enabled bitmap not in use while open: $(qemu_bitmap_flags "$f" on)"
[ "$(qemu_bitmap_flags "$f" off)" = "none 65536" ] ||
    fail "disabled bitmap flagged: $(qemu_bitmap_flags "$f" off)"
kill -9 $pid
wait $pid 2>/dev/null || true

"$PROBE" "$f" list >"$T/list" 2>"$T/err"
grep -q '^on 65536 0 0 1 1$' "$T/list" || fail "after a crash: $(cat "$T/list")"
grep -q '^off 65536 65536 0 1 0$' "$T/list" ||
    fail "after a crash: $(cat "$T/list")"
qemu_map "$f" off >"$T/off.after"
diff -u "$T/off.before" "$T/off.after" >&2 || fail "disabled bitmap changed"
qemu-nbd -r -f qcow2 -B on -k "$T/q.sock" "$f" 2>"$T/qn.err" &&
    fail "qemu-nbd exported an in-use bitmap (the oracle disagrees)"

# A read-write open and clean close keeps it as found; removing it works.
"$PROBE" -w "$f" write 4M 4k || fail "write beside an inconsistent bitmap"
[ "$(qemu_bitmap_flags "$f" on)" = "in-use,auto 65536" ] ||
    fail "inconsistent bitmap rewritten: $(qemu_bitmap_flags "$f" on)"
qemu_clean "$f"
"$DISKSERVE_IMG" bitmap --remove "$f" on || fail "removing the in-use bitmap"
qemu_clean "$f"

# A clean close clears the flags.
"$DISKSERVE_IMG" bitmap --enable "$f" off || fail "enable"
"$PROBE" -w "$f" write 8M 4k || fail "write"
[ "$(qemu_bitmap_flags "$f" off)" = "auto 65536" ] ||
    fail "after a clean close: $(qemu_bitmap_flags "$f" off)"
qemu_clean "$f"
