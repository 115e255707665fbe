#!/bin/sh
# Claim: --oneshot keeps serving while any client is connected (a second
# client coming and going does not end it), exits with status 0 once the
# last client leaves, and what that client wrote is in the image.  It
# does not exit before the first client arrives.
. "$abs_top_srcdir/tests/functions.sh"
require nbdinfo

truncate -s 1M "$T/disk.img"
ds_start oneshot --oneshot -f raw "$T/disk.img"

sleep 1
kill -0 "$DS_PID" 2>/dev/null || fail "--oneshot exited before any client"

# Client A writes, says so, and stays until told to go.
/usr/bin/python3 - "$DS_SOCK" "$T" <<'PY' &
import nbd, os, sys, time
sock, tmp = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.connect_unix(sock)
h.pwrite(b"oneshot!" * 512, 65536)
open(os.path.join(tmp, "a.ready"), "w").close()
for _ in range(600):
    if os.path.exists(os.path.join(tmp, "a.go")):
        break
    time.sleep(0.05)
h.shutdown()
PY
client_a=$!

for _ in $(seq 200); do
    [ -e "$T/a.ready" ] && break
    sleep 0.05
done
[ -e "$T/a.ready" ] || fail "client A did not connect"

# Client B comes and goes while A stays.
nbdinfo --size "$DS_URI" >/dev/null || fail "second client refused"
sleep 1
kill -0 "$DS_PID" 2>/dev/null ||
    fail "--oneshot exited when one of two clients left"

touch "$T/a.go"
wait "$client_a" || fail "client A failed"

rc=0
for _ in $(seq 100); do
    kill -0 "$DS_PID" 2>/dev/null || break
    sleep 0.1
done
! kill -0 "$DS_PID" 2>/dev/null ||
    fail "--oneshot still running 10 s after the last client left"
wait "$DS_PID" || rc=$?
[ "$rc" -eq 0 ] || {
    cat "$T/oneshot.log" >&2
    fail "--oneshot exited with $rc"
}

/usr/bin/python3 - "$T/disk.img" <<'PY' || fail "A's write is not in the image"
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(65536)
    sys.exit(0 if f.read(4096) == b"oneshot!" * 512 else 1)
PY
echo PASS
