#!/bin/bash
# Claim: SIGHUP makes diskserve load its certificates and PSK file again:
# new connections get the new server certificate and the new PSK users,
# while a connection opened before keeps reading and writing; a reload
# that fails (a broken key file) keeps the credentials in use.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/interop/interop-functions.sh"
. "$abs_top_srcdir/tests/tls/tls-functions.sh"
require nbdinfo

make_pki
# A server certificate from the second CA, and a client trusting it.
mkdir "$T/pki/server2" "$T/pki/client-second"
_tls_cert second "$T/pki/server2/server-key.pem" \
    "$T/pki/server2/server-cert.pem" 'cn = "localhost"' \
    'dns_name = "localhost"' 'ip_address = "127.0.0.1"' 'tls_www_server' \
    'signing_key' 'encryption_key' 'expiration_days = 30'
cp "$T/pki/second-ca-cert.pem" "$T/pki/client-second/ca-cert.pem"
mkdir "$T/live"
cp "$T/pki/server/"*.pem "$T/live/"
make_psk "$T/keys.psk" alice
truncate -s 4M "$T/disk.img"

ds_start_tcp hup --tls=require --tls-certificates "$T/live" \
    --tls-psk "$T/keys.psk" -f raw "$T/disk.img"
main="nbds://localhost:$DS_PORT/?tls-certificates=$T/pki/client"
second="nbds://localhost:$DS_PORT/?tls-certificates=$T/pki/client-second"
psk() { echo "nbds://$1@localhost:$DS_PORT/?tls-psk-file=$T/keys.psk"; }

nbdinfo --size "$main" >/dev/null || fail "first certificate not served"
nbdinfo --size "$(psk alice)" >/dev/null || fail "alice before reload"

# A client that stays connected across the reloads.
mkfifo "$T/go"
URI=$main /usr/bin/python3 - "$T/go" >"$T/live.out" 2>&1 <<'PY' &
import nbd, os, sys
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
h.pwrite(b"before", 0)
print("connected", flush=True)
open(sys.argv[1]).read()          # wait for the reloads
h.pwrite(b"after!", 4096)
h.flush()
assert h.pread(6, 0) == b"before" and h.pread(6, 4096) == b"after!"
h.shutdown()
print("done", flush=True)
PY
live=$!
for _ in $(seq 100); do
    grep -q connected "$T/live.out" && break
    sleep 0.1
done
grep -q connected "$T/live.out" || fail "live client did not connect"

cp "$T/pki/server2/"server-*.pem "$T/live/"
make_psk "$T/keys.psk" alice bob
kill -HUP "$DS_PID"
for _ in $(seq 50); do
    grep -q "credentials reloaded" "$T/hup.log" && break
    sleep 0.1
done
grep -q "credentials reloaded" "$T/hup.log" || fail "no reload logged"
nbdinfo --size "$second" >/dev/null || fail "new certificate not served"
nbdinfo --size "$main" >/dev/null 2>&1 && fail "old certificate still served"
nbdinfo --size "$(psk bob)" >/dev/null || fail "new PSK user refused"

# A broken key: the reload fails and the second certificate stays.
echo garbage >"$T/live/server-key.pem"
kill -HUP "$DS_PID"
for _ in $(seq 50); do
    grep -q "reload failed" "$T/hup.log" && break
    sleep 0.1
done
grep -q "reload failed" "$T/hup.log" || fail "failed reload not logged"
nbdinfo --size "$second" >/dev/null || fail "credentials lost on a bad reload"

echo go >"$T/go"
wait "$live" || { cat "$T/live.out"; fail "live connection broke"; }
kill -0 "$DS_PID" || fail "server died"
ds_stop "$DS_PID" || fail "server exit status"
echo PASS
