#!/bin/bash
# Claim: a TLS client refuses a server whose certificate its CA did not
# sign or that has expired; with --tls-verify-peer the server refuses a
# client certificate from another CA or an expired one, and with
# --tls-authz only the client names listed get the export (others get
# NBD_REP_ERR_POLICY and an empty export list), while listed clients
# read their data.  The client's own checks run over TCP: libnbd 1.14
# verifies a server certificate only against a host name, and a Unix
# socket URI has none.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/interop/interop-functions.sh"
. "$abs_top_srcdir/tests/tls/tls-functions.sh"
require nbdinfo

make_pki
truncate -s 1M "$T/disk.img"

uri()
{
    if [ -n "$TCP" ]; then
        echo "nbds://localhost:$DS_PORT/?tls-certificates=$T/pki/$1"
    else
        echo "nbds+unix:///?socket=$DS_SOCK&tls-certificates=$T/pki/$1"
    fi
}

# refused CLIENT-DIR LABEL [nbdinfo options]: the connection fails.
refused()
{
    local dir=$1 what=$2
    shift 2
    if nbdinfo "$@" "$(uri "$dir")" >"$T/out.txt" 2>&1; then
        cat "$T/out.txt"
        fail "$what: connected"
    fi
}
served()
{
    nbdinfo --size "$(uri "$1")" >"$T/out.txt" 2>&1 ||
        { cat "$T/out.txt"; fail "$2: refused"; }
    [ "$(cat "$T/out.txt")" = 1048576 ] || fail "$2: size"
}

# The client checks the server.
TCP=yes
ds_start_tcp ok --tls=require --tls-certificates "$T/pki/server" -f raw \
    "$T/disk.img"
served client "trusted server"
refused wrongca "server certificate from a CA the client does not trust"
grep -q "certificate\|verif" "$T/out.txt" || fail "wrong CA: $(cat "$T/out.txt")"
ds_stop "$DS_PID"

ds_start_tcp expired --tls=require --tls-certificates "$T/pki/expired" -f raw \
    "$T/disk.img"
refused client "expired server certificate"
grep -qi "expired\|verif\|certificate" "$T/out.txt" ||
    fail "expired: $(cat "$T/out.txt")"
ds_stop "$DS_PID"

# The server checks the client.
TCP=
ds_start verify --tls=require --tls-certificates "$T/pki/server" \
    --tls-verify-peer -f raw "$T/disk.img"
served client "client certificate from our CA"
refused other "client certificate from another CA"
# GnuTLS clients send no certificate our CA did not sign: the server
# asked for one from its CA only.
grep -q "TLS handshake failed: Certificate is required\|client certificate refused" \
    "$T/verify.log" || fail "no log line for the other CA's certificate"
refused client-expired "expired client certificate"
grep -q "client certificate refused.*expired" "$T/verify.log" ||
    fail "no log line for the expired certificate"
served client2 "second client of our CA"
ds_stop "$DS_PID"

# Only the listed name gets the export.
cert_dn "$T/pki/client/client-cert.pem" >"$T/authz"
[ -s "$T/authz" ] || fail "no DN from certtool"
ds_start authz --tls=require --tls-certificates "$T/pki/server" \
    --tls-authz "$T/authz" -f raw "$T/disk.img"
served client "client on the allow-list"
refused client2 "client not on the allow-list" --size
grep -q "policy" "$T/out.txt" || fail "client2: $(cat "$T/out.txt")"
nbdinfo --list "$(uri client2)" >"$T/list.txt" 2>&1 || true
grep -q 'export=""' "$T/list.txt" && fail "export listed to client2"
nbdinfo --list "$(uri client)" >"$T/list.txt" 2>&1 ||
    fail "list for the allowed client: $(cat "$T/list.txt")"
grep -q 'export=""' "$T/list.txt" || fail "export not listed to client"
refused other "another CA's client, allow-list server"
ds_stop "$DS_PID" || fail "server exit status"
echo PASS
