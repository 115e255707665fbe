#!/bin/bash
# Claim: inconsistent TLS options are refused with one line and exit 2
# before anything is opened; credentials that cannot be loaded (a
# missing key, a bad priority string, a missing PSK file) stop the
# server at startup with exit 1 and a message naming the cause.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/tls/tls-functions.sh"

make_pki
make_psk "$T/keys.psk" alice
truncate -s 1M "$T/disk.img"
C="--tls-certificates=$T/pki/server"

usage()
{
    local rc=0
    "$DISKSERVE" -k "$T/x.sock" "$@" "$T/disk.img" >"$T/err" 2>&1 || rc=$?
    [ "$rc" = 2 ] || fail "$*: exit $rc ($(cat "$T/err"))"
    [ "$(wc -l <"$T/err")" = 1 ] || fail "$*: $(cat "$T/err")"
    [ ! -e "$T/x.sock" ] || fail "$*: socket created"
}
startup()
{
    local want=$1 rc=0
    shift
    timeout 10 "$DISKSERVE" -k "$T/x.sock" "$@" "$T/disk.img" \
        >"$T/err" 2>&1 || rc=$?
    [ "$rc" = 1 ] || fail "$*: exit $rc ($(cat "$T/err"))"
    grep -q "$want" "$T/err" || fail "$*: $(cat "$T/err")"
}

usage --tls=maybe "$C"
usage "$C"
usage --tls-psk "$T/keys.psk"
usage --tls-verify-peer
usage --tls=on
usage --tls=on --tls-psk "$T/keys.psk" --tls-verify-peer
usage --tls=on "$C" --tls-authz "$T/no-such-file"
usage --tls=on --tls-psk "$T/keys.psk" --tls-authz "$T/keys.psk"
usage --tls-psk-users alice
startup "server-key.pem" --tls=on --tls-certificates="$T/pki/client"
startup "priority" --tls=on "$C" --tls-priority "NORMAL:+NO-SUCH-THING"
startup "no-such.psk" --tls=on --tls-psk "$T/no-such.psk"
echo PASS
