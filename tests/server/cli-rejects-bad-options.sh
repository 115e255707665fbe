#!/bin/bash
# Bad command lines and config files: one line on stderr, exit 2, nothing
# served.  Good ones: --help and --version exit 0.
. "$abs_top_srcdir/tests/functions.sh"

expect_usage_error()
{
    local rc=0
    "$DISKSERVE" "$@" >"$T/out" 2>"$T/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "diskserve $*: exit $rc, expected 2"
    [ "$(wc -l <"$T/err")" -eq 1 ] ||
        fail "diskserve $*: expected one line on stderr, got: $(cat "$T/err")"
    [ ! -s "$T/out" ] || fail "diskserve $*: wrote to stdout"
}

truncate -s 1M "$T/disk.img"
expect_usage_error --no-such-option "$T/disk.img"
expect_usage_error -f vmdk "$T/disk.img"
expect_usage_error -p 0 "$T/disk.img"
expect_usage_error -p 70000 "$T/disk.img"
expect_usage_error -e many "$T/disk.img"
expect_usage_error --threads 0 "$T/disk.img"
expect_usage_error
expect_usage_error "$T/disk.img" extra
expect_usage_error -k
expect_usage_error -s -k "$T/s.sock" "$T/disk.img"
expect_usage_error -x "$(head -c 5000 /dev/zero | tr '\0' a)" "$T/disk.img"

printf '[export a]\nimage = %s\nbogus = 1\n' "$T/disk.img" >"$T/bad1.conf"
expect_usage_error --config "$T/bad1.conf"
printf '[export a]\nformat = raw\n' >"$T/bad2.conf"
expect_usage_error --config "$T/bad2.conf"
printf '[export a]\nimage = %s\nread-only = maybe\n' "$T/disk.img" >"$T/bad3.conf"
expect_usage_error --config "$T/bad3.conf"
printf 'not an ini line\n' >"$T/bad4.conf"
expect_usage_error --config "$T/bad4.conf"
expect_usage_error --config "$T/missing.conf"
expect_usage_error --config "$T/bad1.conf" "$T/disk.img"

"$DISKSERVE" --help | grep -q -- '--export-name' || fail "--help"
"$DISKSERVE" --version | grep -q '^diskserve [0-9]' || fail "--version"

# A missing image: a clear error, exit 1, no socket left behind.
rc=0
"$DISKSERVE" -k "$T/x.sock" "$T/nope.img" 2>"$T/err" || rc=$?
[ "$rc" -eq 1 ] || fail "missing image: exit $rc"
grep -q "nope.img" "$T/err" || fail "missing image: message $(cat "$T/err")"
[ ! -e "$T/x.sock" ] || fail "socket created for a missing image"
echo "ok"
