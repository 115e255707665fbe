#!/bin/bash
# Claim: diskserve --stdio --tls=require, started by libnbd's
# connect_command on a socket pair, negotiates TLS and serves reads and
# writes; without TLS the same client is refused.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/tls/tls-functions.sh"

make_pki
truncate -s 1M "$T/disk.img"
export D=$T/pki/client S=$T/pki/server IMG=$T/disk.img DS=$DISKSERVE
/usr/bin/python3 - <<'PY' || fail "stdio over TLS"
import nbd, os
cmd = [os.environ["DS"], "-s", "--tls=require", "--tls-certificates",
       os.environ["S"], "-f", "raw", os.environ["IMG"]]
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_certificates(os.environ["D"])
h.connect_command(cmd)
assert h.get_tls_negotiated()
h.pwrite(b"over stdio", 4096)
h.flush()
assert h.pread(10, 4096) == b"over stdio"
h.shutdown()

h = nbd.NBD()
try:
    h.connect_command(cmd)
except nbd.Error:
    pass
else:
    raise AssertionError("plain client served")
PY
cmp -n 10 -i 4096:0 "$IMG" <(printf 'over stdio') || fail "write not in the file"
echo PASS
