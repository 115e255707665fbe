#!/bin/bash
# Claim: with --tls-psk, a client with the wrong key for its username
# or a username the file does not have fails the TLS handshake; with
# --tls-psk-users only the listed users get the export; a handshake
# failure leaves the server serving others.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/tls/tls-functions.sh"
require nbdinfo

truncate -s 1M "$T/disk.img"
make_psk "$T/server.psk" alice bob
make_psk "$T/wrong.psk" alice bob       # same names, other keys
make_psk "$T/carol.psk" carol

uri() { echo "nbds+unix://$1@/?socket=$DS_SOCK&tls-psk-file=$2"; }
refused()
{
    if nbdinfo --size "$(uri "$1" "$2")" >"$T/out.txt" 2>&1; then
        fail "$3: connected"
    fi
}
served()
{
    nbdinfo --size "$(uri "$1" "$2")" >"$T/out.txt" 2>&1 ||
        { cat "$T/out.txt"; fail "$3: refused"; }
    [ "$(cat "$T/out.txt")" = 1048576 ] || fail "$3: size"
}

ds_start psk --tls=require --tls-psk "$T/server.psk" -f raw "$T/disk.img"
served alice "$T/server.psk" "alice with her key"
refused alice "$T/wrong.psk" "alice with a wrong key"
refused carol "$T/carol.psk" "unknown user"
served bob "$T/server.psk" "bob after the refusals"
[ "$(grep -c "TLS handshake failed" "$T/psk.log")" -ge 2 ] ||
    fail "handshake failures not logged"
ds_stop "$DS_PID" || fail "server exit status"

ds_start users --tls=require --tls-psk "$T/server.psk" \
    --tls-psk-users alice -f raw "$T/disk.img"
served alice "$T/server.psk" "listed user"
refused bob "$T/server.psk" "unlisted user"
grep -q "policy" "$T/out.txt" || fail "bob: $(cat "$T/out.txt")"
ds_stop "$DS_PID" || fail "server exit status"
echo PASS
