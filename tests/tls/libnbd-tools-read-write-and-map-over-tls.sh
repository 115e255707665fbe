#!/bin/bash
# Claim: nbdinfo, nbdcopy (out of and into the server, compared by
# checksum) and nbdsh (write, read back, block status) work over TLS
# with X.509 certificates and with a PSK, on a Unix socket and on TCP,
# against diskserve --tls=require; the connections really are TLS.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/interop/interop-functions.sh"
. "$abs_top_srcdir/tests/tls/tls-functions.sh"
require nbdinfo nbdcopy nbdsh

test_seed
make_pki
make_psk "$T/keys.psk" alice
truncate -s 16M "$T/disk.img"
write_data "$T/disk.img" "$SEED" 0:1048576 4194304:65536 12582912:2097152
cp "$T/disk.img" "$T/orig.img"

# check URI LABEL: every tool against one URI.
check()
{
    local uri=$1 what=$2
    nbdinfo "$uri" >"$T/info.txt" 2>&1 || { cat "$T/info.txt"; fail "$what: nbdinfo"; }
    grep -q "with TLS" "$T/info.txt" || fail "$what: nbdinfo saw no TLS"
    grep -q "export-size: 16777216" "$T/info.txt" || fail "$what: size"

    rm -f "$T/out.img"
    nbdcopy "$uri" "$T/out.img" || fail "$what: nbdcopy out"
    [ "$(md5sum <"$T/out.img")" = "$(md5sum <"$T/disk.img")" ] ||
        fail "$what: nbdcopy out: checksum differs"

    truncate -s 16M "$T/new.img"
    write_data "$T/new.img" $((SEED + 1)) 0:65536 8388608:3145728
    nbdcopy "$T/new.img" "$uri" || fail "$what: nbdcopy in"
    [ "$(md5sum <"$T/new.img")" = "$(md5sum <"$T/disk.img")" ] ||
        fail "$what: nbdcopy in: image file differs"

    URI=$uri nbdsh -c '
import nbd, os
h.set_uri_allow_local_file(True)
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(os.environ["URI"])
assert h.get_tls_negotiated(), "TLS not negotiated"
data = b"over TLS!" * 7000
h.pwrite(data, 1000000)
h.flush()
assert h.pread(len(data), 1000000) == data
h.zero(2097152, 1048576)
seen = []
def extent(meta, offset, entries, err):
    if meta == nbd.CONTEXT_BASE_ALLOCATION:
        seen.extend(entries)
h.block_status(2097152, 1048576, extent)
assert sum(seen[0::2]) == 2097152, seen
assert any(f & nbd.STATE_ZERO for f in seen[1::2]), seen
assert h.pread(2097152, 1048576) == bytes(2097152)
' || fail "$what: nbdsh"
    cp "$T/disk.img" "$T/orig.img"
}

ds_start_tcp tcp --tls=require --tls-certificates "$T/pki/server" \
    --tls-psk "$T/keys.psk" -f raw "$T/disk.img"
tcp_pid=$DS_PID
check "nbds://localhost:$DS_PORT/?tls-certificates=$T/pki/client" "x509 tcp"
check "nbds://alice@localhost:$DS_PORT/?tls-psk-file=$T/keys.psk" "psk tcp"
ds_stop "$tcp_pid" || fail "tcp server exit status"

ds_start unix --tls=require --tls-certificates "$T/pki/server" \
    --tls-psk "$T/keys.psk" -f raw "$T/disk.img"
check "nbds+unix:///?socket=$DS_SOCK&tls-certificates=$T/pki/client" \
    "x509 unix"
check "nbds+unix://alice@/?socket=$DS_SOCK&tls-psk-file=$T/keys.psk" \
    "psk unix"
ds_stop "$DS_PID" || fail "unix server exit status"
grep -q "TLS handshake failed" "$T/unix.log" "$T/tcp.log" &&
    fail "a handshake failed"
echo PASS
