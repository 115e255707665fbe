#!/bin/sh
# Claim: with --fork the command returns 0 only once the daemon listens
# (the first connection after it returns succeeds, no retry), the file
# named by --pid-file holds the daemon's pid, the daemon lets go of the
# caller's stdout (so `$(diskserve --fork ...)` returns), and SIGTERM
# stops it.  A daemon that cannot open its image makes the command fail
# instead, with no pid file and no socket left behind.  Without --fork,
# --pid-file names the server process itself.
. "$abs_top_srcdir/tests/functions.sh"
require nbdinfo

truncate -s 3M "$T/disk.img"
sock="$T/fork.sock"
pidfile="$T/fork.pid"

rc=0
timeout 30 "$DISKSERVE" --fork --pid-file "$pidfile" -k "$sock" -f raw \
    "$T/disk.img" >"$T/fork.out" 2>"$T/fork.err" || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/fork.err" >&2; fail "--fork exited with $rc"; }

[ -s "$pidfile" ] || fail "no pid file after --fork returned"
pid=$(cat "$pidfile")
case "$pid" in
    ''|*[!0-9]*) fail "pid file holds '$pid', not a pid" ;;
esac
# functions.sh stops every pid on this list on exit.
_ds_pids="$_ds_pids $pid"
kill -0 "$pid" 2>/dev/null || fail "pid $pid from the pid file is not running"
[ "$(readlink "/proc/$pid/exe")" = "$(readlink -f "$DISKSERVE")" ] ||
    fail "pid $pid is $(readlink "/proc/$pid/exe"), not diskserve"

# Listening already: one attempt, no waiting.
size=$(nbdinfo --size "nbd+unix:///?socket=$sock") ||
    fail "first connection after --fork returned was refused"
[ "$size" = 3145728 ] || fail "size $size"

out=$(readlink "/proc/$pid/fd/1" || true)
[ "$out" != "$T/fork.out" ] ||
    fail "the daemon still holds the caller's stdout"

kill -TERM "$pid"
for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
! kill -0 "$pid" 2>/dev/null || fail "daemon still running 10 s after SIGTERM"

# A daemon that cannot start reports it to the caller.
rm -f "$pidfile"
rc=0
timeout 30 "$DISKSERVE" --fork --pid-file "$pidfile" -k "$T/bad.sock" \
    -f raw "$T/no-such.img" >/dev/null 2>"$T/bad.err" || rc=$?
[ "$rc" -ne 0 ] || fail "--fork with a missing image exited 0"
[ "$rc" -ne 124 ] || fail "--fork with a missing image hung"
[ ! -e "$pidfile" ] || fail "pid file written by a daemon that failed"
[ ! -S "$T/bad.sock" ] || fail "socket left by a daemon that failed"
# In the foreground the pid file holds the server's own pid.
ds_start fg --pid-file "$T/fg.pid" -f raw "$T/disk.img"
for _ in $(seq 100); do
    [ -s "$T/fg.pid" ] && break
    sleep 0.05
done
[ "$(cat "$T/fg.pid" 2>/dev/null)" = "$DS_PID" ] ||
    fail "foreground pid file holds '$(cat "$T/fg.pid" 2>/dev/null)'," \
        "not $DS_PID"
ds_stop "$DS_PID" || fail "exit status $? after SIGTERM"
echo PASS
