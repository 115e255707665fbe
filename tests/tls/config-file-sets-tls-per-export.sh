#!/bin/bash
# Claim: the config file's TLS keys work as the command line's: [server]
# tls, tls-certificates, tls-psk, tls-priority; per export tls-authz
# (certificate names) and tls-psk-users (PSK usernames), each export
# served only to the clients its lists name, and an export with no list
# to every TLS client.  A TLS 1.2-only priority string is honoured.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/tls/tls-functions.sh"
require nbdinfo

make_pki
make_psk "$T/keys.psk" alice bob
truncate -s 1M "$T/a.img" "$T/b.img" "$T/c.img"
cert_dn "$T/pki/client/client-cert.pem" >"$T/authz"
cat >"$T/ds.conf" <<CONF
[server]
tls = require
tls-certificates = $T/pki/server
tls-psk = $T/keys.psk
tls-priority = NORMAL:-VERS-ALL:+VERS-TLS1.2:+ECDHE-PSK
[export certs]
image = $T/a.img
tls-authz = $T/authz
[export alice]
image = $T/b.img
tls-psk-users = alice
[export open]
image = $T/c.img
CONF
ds_start conf -v --config "$T/ds.conf"

x509() { echo "nbds+unix:///$2?socket=$DS_SOCK&tls-certificates=$T/pki/$1"; }
psk() { echo "nbds+unix://$1@/$2?socket=$DS_SOCK&tls-psk-file=$T/keys.psk"; }
ok() { nbdinfo --size "$1" >/dev/null 2>&1 || fail "refused: $1"; }
no() { nbdinfo --size "$1" >/dev/null 2>&1 && fail "served: $1"; true; }

ok "$(x509 client certs)"
no "$(x509 client2 certs)"
no "$(psk alice certs)"
ok "$(psk alice alice)"
no "$(psk bob alice)"
no "$(x509 client alice)"
ok "$(x509 client2 open)"
ok "$(psk bob open)"
grep -q "TLS1.2" "$T/conf.log" || fail "TLS 1.2 not negotiated"
grep -q "TLS1.3" "$T/conf.log" && fail "TLS 1.3 negotiated against the priority"
ds_stop "$DS_PID" || fail "server exit status"
echo PASS
