#!/bin/bash
# Claim: started by systemd-socket-activate (LISTEN_FDS, the socket on
# fd 3), diskserve --tls=require serves TLS clients on the inherited
# Unix or TCP socket (X.509 and PSK), refuses plain ones, and stops
# cleanly on SIGTERM.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/tls/tls-functions.sh"
require systemd-socket-activate nbdinfo nbdsh

make_pki
make_psk "$T/keys.psk" alice
truncate -s 2M "$T/disk.img"
printf 'activated' | dd of="$T/disk.img" conv=notrunc status=none

tls_opts=(--tls=require --tls-certificates "$T/pki/server"
          --tls-psk "$T/keys.psk" -f raw "$T/disk.img")

# served URI LABEL: read and write through the URI.
served()
{
    URI=$1 nbdsh -c '
import os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
assert h.get_tls_negotiated()
assert h.pread(9, 0) == b"activated"
h.pwrite(b"written", 1048576)
h.flush()
assert h.pread(7, 1048576) == b"written"
h.shutdown()
' || fail "$2: not served over TLS"
}

systemd-socket-activate -l "$T/act.sock" "$DISKSERVE" "${tls_opts[@]}" \
    >"$T/unix.log" 2>&1 &
pid=$!
_ds_pids="$_ds_pids $pid"
wait_for_socket "$T/act.sock" "$pid"
served "nbds+unix:///?socket=$T/act.sock&tls-certificates=$T/pki/client" \
    "unix x509"
served "nbds+unix://alice@/?socket=$T/act.sock&tls-psk-file=$T/keys.psk" \
    "unix psk"
nbdinfo --size "nbd+unix:///?socket=$T/act.sock" >/dev/null 2>&1 &&
    fail "plain client served"
ds_stop "$pid" || fail "unix: exit status after SIGTERM"

port=$(/usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
systemd-socket-activate -l "127.0.0.1:$port" "$DISKSERVE" "${tls_opts[@]}" \
    >"$T/tcp.log" 2>&1 &
pid=$!
_ds_pids="$_ds_pids $pid"
hexport=$(printf '%04X' "$port")
for _ in $(seq 200); do
    awk -v p=":$hexport" '$2 ~ p"$" && $4 == "0A" { f = 1 } END { exit !f }' \
        /proc/net/tcp && break
    sleep 0.05
done
served "nbds://localhost:$port/?tls-certificates=$T/pki/client" "tcp x509"
served "nbds://alice@localhost:$port/?tls-psk-file=$T/keys.psk" "tcp psk"
ds_stop "$pid" || fail "tcp: exit status after SIGTERM"
echo PASS
