#!/bin/bash
# --log-file: lines go to the file; after the file is moved away (log
# rotation), SIGHUP makes the server log into a new file at the same path.
. "$abs_top_srcdir/tests/functions.sh"
require nbdinfo

truncate -s 1M "$T/disk.img"
ds_start srv -v --log-file "$T/log" "$T/disk.img"
nbdinfo "$DS_URI" >/dev/null
grep -q "client 1: connected" "$T/log" || fail "no connection line in the log"
[ ! -s "$T/srv.log" ] || fail "stderr used despite --log-file: $(cat "$T/srv.log")"

mv "$T/log" "$T/log.1"
kill -HUP "$DS_PID"
for _ in $(seq 50); do [ -e "$T/log" ] && break; sleep 0.1; done
[ -e "$T/log" ] || fail "SIGHUP did not reopen the log"
nbdinfo "$DS_URI" >/dev/null
grep -q "client 2: connected" "$T/log" || fail "second client not in the new log"
! grep -q "client 2" "$T/log.1" || fail "second client logged into the old file"
kill -0 "$DS_PID" || fail "SIGHUP stopped the server"
ds_stop "$DS_PID" || fail "exit status $? after SIGTERM"
echo ok
