#!/bin/sh
# Claim: started the way systemd starts a socket-activated service
# (LISTEN_PID = its own pid, LISTEN_FDS=1, the listening socket on fd 3,
# no -k/-p), diskserve serves on that socket, Unix or TCP, and stops
# cleanly on SIGTERM.  A small launcher binds the socket, sets the
# environment and execs diskserve in the same process, so the pid matches.
. "$abs_top_srcdir/tests/functions.sh"
require nbdinfo

launcher="$T/activate.py"
cat >"$launcher" <<'PY'
import os, socket, sys
kind, where, prog = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "unix":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(where)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    with open(where, "w") as f:
        f.write("%d\n" % s.getsockname()[1])
s.listen(16)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
    s.close()
os.set_inheritable(3, True)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_FDNAMES"] = "nbd"
os.execv(prog, [prog] + sys.argv[4:])
PY

head -c 1048576 /dev/zero | tr '\0' 'a' >"$T/disk.img"
truncate -s 2M "$T/disk.img"

check_served()
{
    uri=$1 pid=$2
    size=$(nbdinfo --size "$uri") || fail "$uri: not served"
    [ "$size" = 2097152 ] || fail "$uri: size $size"
    /usr/bin/python3 - "$uri" <<'PY' || fail "$uri: read or write failed"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.pread(16, 0) == b"a" * 16
h.pwrite(b"activated", 1048576)
h.flush()
assert h.pread(9, 1048576) == b"activated"
h.shutdown()
PY
    rc=0
    ds_stop "$pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "$uri: exit status $rc after SIGTERM"
}

# Unix socket.
/usr/bin/python3 "$launcher" unix "$T/act.sock" "$DISKSERVE" -f raw \
    "$T/disk.img" >"$T/unix.log" 2>&1 &
pid=$!
_ds_pids="$_ds_pids $pid"
wait_for_socket "$T/act.sock" "$pid"
check_served "nbd+unix:///?socket=$T/act.sock" "$pid"

# TCP.
/usr/bin/python3 "$launcher" tcp "$T/port" "$DISKSERVE" -f raw \
    "$T/disk.img" >"$T/tcp.log" 2>&1 &
pid=$!
_ds_pids="$_ds_pids $pid"
for _ in $(seq 200); do
    [ -s "$T/port" ] && break
    sleep 0.05
done
[ -s "$T/port" ] || fail "launcher did not bind a TCP port"
check_served "nbd://127.0.0.1:$(cat "$T/port")/" "$pid"
echo PASS
