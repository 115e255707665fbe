#!/bin/bash
# Claim: qemu's NBD client with --object tls-creds-x509 and with
# --object tls-creds-psk works against diskserve --tls=require: qemu-img
# convert out of and into the export (compared with qemu-img compare),
# qemu-io writes and reads back a pattern, and qemu-img map reports the
# holes and data the image has, on a Unix socket and over TCP.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/interop/interop-functions.sh"
. "$abs_top_srcdir/tests/tls/tls-functions.sh"
require qemu-img qemu-io

test_seed
make_pki
mkdir "$T/psk"
make_psk "$T/psk/keys.psk" alice
cp "$T/psk/keys.psk" "$T/server.psk"
truncate -s 8M "$T/disk.img"
write_data "$T/disk.img" "$SEED" 0:1048576 6291456:65536

X509="tls-creds-x509,id=tls0,endpoint=client,dir=$T/pki/client"
PSK="tls-creds-psk,id=tls0,endpoint=client,dir=$T/psk,username=alice"

# check OBJECT SERVER-OPTS LABEL
check()
{
    local obj=$1 srv=$2 what=$3
    local opts="driver=nbd,$srv,tls-creds=tls0"

    qemu-img convert -O raw --object "$obj" --image-opts "$opts" \
        "$T/out.img" || fail "$what: convert out"
    qemu-img compare -f raw -F raw "$T/disk.img" "$T/out.img" ||
        fail "$what: converted copy differs"

    truncate -s 8M "$T/src.img"
    write_data "$T/src.img" $((SEED + 7)) 2097152:1048576
    qemu-img convert -n --object "$obj" -f raw "$T/src.img" \
        --target-image-opts "$opts" || fail "$what: convert in"
    cmp "$T/src.img" "$T/disk.img" || fail "$what: convert in: file differs"

    qemu-io --object "$obj" --image-opts "$opts" \
        -c 'write -P 0x5a 4096 65536' -c 'flush' \
        -c 'read -P 0x5a 4096 65536' -c 'read -P 0 7340032 4096' \
        >"$T/io.txt" 2>&1 || { cat "$T/io.txt"; fail "$what: qemu-io"; }
    grep -qi "pattern verification failed\|error" "$T/io.txt" &&
        { cat "$T/io.txt"; fail "$what: qemu-io read back"; }
    cmp -n 65536 -i 4096:0 "$T/disk.img" \
        <(head -c 65536 /dev/zero | tr '\0' '\132') ||
        fail "$what: qemu-io write did not land"

    qemu-img map --output=json --object "$obj" --image-opts "$opts" \
        >"$T/map.json" || fail "$what: map"
    /usr/bin/python3 - "$T/map.json" <<'PY' || fail "$what: map content"
import json, sys
m = json.load(open(sys.argv[1]))
assert sum(e["length"] for e in m) == 8 << 20, m
# 2M..3M holds data, 7M..8M is a hole
def at(off):
    return next(e for e in m if e["start"] <= off < e["start"] + e["length"])
assert at(2 << 20)["data"] and not at(2 << 20)["zero"], m
assert at(7 << 20)["zero"], m
PY
}

ds_start unix --tls=require --tls-certificates "$T/pki/server" \
    --tls-psk "$T/server.psk" -f raw "$T/disk.img"
check "$X509" "server.type=unix,server.path=$DS_SOCK,tls-hostname=localhost" "x509 unix"
check "$PSK" "server.type=unix,server.path=$DS_SOCK,tls-hostname=localhost" "psk unix"
ds_stop "$DS_PID" || fail "unix server exit status"

ds_start_tcp tcp --tls=require --tls-certificates "$T/pki/server" \
    --tls-psk "$T/server.psk" -f raw "$T/disk.img"
check "$X509" "server.type=inet,server.host=localhost,server.port=$DS_PORT" \
    "x509 tcp"
check "$PSK" "server.type=inet,server.host=localhost,server.port=$DS_PORT" \
    "psk tcp"
ds_stop "$DS_PID" || fail "tcp server exit status"
echo PASS
