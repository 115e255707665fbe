#!/bin/bash
# After an fdatasync of the image fails, a qcow2 export refuses every
# later write and flush with EIO (the kernel may have dropped the dirty
# pages, so a later successful sync could make metadata durable that
# points at lost data), while reads go on; as the raw driver does.
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img nbdsh

qemu-img create -q -f qcow2 "$T/disk.qcow2" 8M
export DISKSERVE_FAULT=FLUSH:1:EIO
ds_start srv "$T/disk.qcow2"
unset DISKSERVE_FAULT

/usr/bin/python3 - "$DS_SOCK" <<'PY' || fail "writes after a failed sync"
import sys
import nbd

h = nbd.NBD()
h.connect_unix(sys.argv[1])
h.pwrite(b"\x11" * 65536, 0)
try:
    h.flush()
except nbd.Error as e:
    assert e.errno == "EIO", e
else:
    sys.exit("the injected sync failure did not fail the flush")
for what, call in (("write", lambda: h.pwrite(b"\x22" * 4096, 1 << 20)),
                   ("zero", lambda: h.zero(4096, 2 << 20)),
                   ("trim", lambda: h.trim(4096, 0)),
                   ("flush", lambda: h.flush())):
    try:
        call()
    except nbd.Error as e:
        assert e.errno == "EIO", (what, e)
    else:
        sys.exit(f"{what} accepted after a failed sync")
assert h.pread(4096, 1 << 20) == bytes(4096), "refused write landed"
h.pread(4096, 0)
print("ok")
PY
grep -q "refusing further writes" "$T/srv.log" || fail "no log line"
ds_stop "$DS_PID" || true
rc=0
qemu-img check "$T/disk.qcow2" >"$T/check" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || fail "qemu-img check exit $rc: $(cat "$T/check")"
echo ok
