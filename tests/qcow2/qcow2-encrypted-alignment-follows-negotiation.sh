#!/bin/bash
# An encrypted qcow2 advertises a 512-byte minimum block size.  A client
# that asked for the block size in GO is held to it (EINVAL for unaligned
# requests, nothing written); a client that did not ask is served (the
# driver reads, modifies and writes whole sectors), as with qemu-nbd.
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img nbdsh

printf 'correct horse' >"$T/key"
# qemu's PBKDF timing with a short iter-time sometimes fails with
# "Unable to get accurate CPU usage" on a busy machine: retry.
tries=0
until qemu-img create -q -f qcow2 --object secret,id=s0,file="$T/key" \
    -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 \
    "$T/enc.qcow2" 4M; do
    tries=$((tries + 1))
    [ $tries -lt 5 ] || fail "qemu-img create"
done
ds_start srv --key-file "$T/key" "$T/enc.qcow2"

/usr/bin/python3 - "$DS_SOCK" <<'PY' || fail "alignment rules"
import sys
import nbd

sock = sys.argv[1]

asked = nbd.NBD()
asked.set_strict_mode(asked.get_strict_mode() & ~nbd.STRICT_ALIGN)
asked.connect_unix(sock)
assert asked.get_block_size(nbd.SIZE_MINIMUM) == 512, "min block size"
for off, n in ((1, 512), (512, 100), (7, 9)):
    try:
        asked.pwrite(b"\xaa" * n, off)
    except nbd.Error as e:
        assert e.errno == "EINVAL", e
    else:
        sys.exit(f"unaligned write {off}+{n} accepted from a client "
                 "that asked for the block size")
assert asked.pread(4096, 0) == bytes(4096), "refused write changed data"

free = nbd.NBD()
free.set_strict_mode(free.get_strict_mode() & ~nbd.STRICT_ALIGN)
free.set_request_block_size(False)
free.connect_unix(sock)
free.pwrite(b"\xbb" * 9, 7)
got = free.pread(32, 0)
assert got == bytes(7) + b"\xbb" * 9 + bytes(16), got
assert asked.pread(512, 0)[:32] == got
print("ok")
PY
