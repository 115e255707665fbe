#!/bin/bash
# Claim: --socket-mode and --socket-group (and the config file's
# socket-mode and socket-group) set the Unix socket's permissions and
# group before it accepts anyone: a user outside them cannot connect, a
# member of the group can.  Bad values are refused with exit 2.
. "$abs_top_srcdir/tests/functions.sh"
require setpriv nbdinfo

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to switch users" >&2; exit 77; }
chmod 755 "$T"
truncate -s 1M "$T/disk.img"
chmod 644 "$T/disk.img"

as() { setpriv --reuid=nobody --regid="$1" --clear-groups nbdinfo --size \
           "nbd+unix:///?socket=$DS_SOCK" >/dev/null 2>&1; }

ds_start only-owner --socket-mode 0600 -f raw "$T/disk.img"
[ "$(stat -c %a "$DS_SOCK")" = 600 ] || fail "mode $(stat -c %a "$DS_SOCK")"
nbdinfo --size "nbd+unix:///?socket=$DS_SOCK" >/dev/null || fail "owner refused"
as nogroup && fail "another user connected to a 0600 socket"
ds_stop "$DS_PID"

ds_start group --socket-mode 660 --socket-group nogroup -f raw "$T/disk.img"
[ "$(stat -c %a:%G "$DS_SOCK")" = 660:nogroup ] ||
    fail "mode and group $(stat -c %a:%G "$DS_SOCK")"
as nogroup || fail "group member refused"
as daemon && fail "user outside the group connected"
ds_stop "$DS_PID"

cat >"$T/ds.conf" <<CONF
[server]
socket-mode = 0666
socket-group = daemon
[export]
image = $T/disk.img
CONF
ds_start conf --config "$T/ds.conf"
[ "$(stat -c %a:%G "$DS_SOCK")" = 666:daemon ] ||
    fail "config: $(stat -c %a:%G "$DS_SOCK")"
as nogroup || fail "0666 socket refused a user"
ds_stop "$DS_PID"

for bad in "--socket-mode 0999" "--socket-mode rw" "--socket-mode 17777" \
           "--socket-group no-such-group-here"; do
    rc=0
    # shellcheck disable=SC2086
    "$DISKSERVE" -k "$T/bad.sock" $bad "$T/disk.img" 2>"$T/err" || rc=$?
    [ "$rc" = 2 ] || fail "$bad: exit $rc"
    [ "$(wc -l <"$T/err")" = 1 ] || fail "$bad: $(cat "$T/err")"
done
echo PASS
