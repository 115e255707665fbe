# Shared helpers for the shell tests.  Source it first:
#   . "$abs_top_srcdir/tests/functions.sh"
# It makes a scratch directory ($T), removes it and stops every server the
# test started on exit, and puts /usr/bin first so Debian's python3 (with
# the nbd module) and the real tools are found.

set -eu
export PATH="${abs_top_builddir:-.}:/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
: "${abs_top_builddir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${abs_top_srcdir:=$abs_top_builddir}"
DISKSERVE="$abs_top_builddir/diskserve"
DISKSERVE_IMG="$abs_top_builddir/diskserve-img"

T=$(mktemp -d "${TMPDIR:-/tmp}/ds-test.XXXXXX")
_ds_pids=""
_ds_cleanup()
{
    for p in $_ds_pids; do
        kill "$p" 2>/dev/null || true
    done
    for p in $_ds_pids; do
        for _ in $(seq 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$T"
}
trap _ds_cleanup EXIT

# fail MESSAGE: print and exit 1.
fail()
{
    echo "FAIL: $*" >&2
    exit 1
}

# require TOOL...: skip (77) when a tool is missing; CI counts a skip as a
# failure, so this only ever helps a developer's partial machine.
require()
{
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || {
            echo "SKIP: $t not installed" >&2
            exit 77
        }
    done
}

# wait_for_socket PATH [PID]: wait up to 10 s for a Unix socket to be
# listening (the file appears at bind, a moment before listen).  Reads
# /proc/net/unix rather than connecting, so --oneshot servers see no
# client.
wait_for_socket()
{
    for _ in $(seq 200); do
        if [ -S "$1" ] &&
           awk -v p="$1" '$NF == p && $4 == "00010000" { f = 1 }
                          END { exit !f }' /proc/net/unix; then
            return 0
        fi
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
            fail "server exited before creating $1"
        fi
        sleep 0.05
    done
    fail "socket $1 did not appear"
}

# ds_start NAME [diskserve options and image]: start diskserve on the Unix
# socket $T/NAME.sock.  Sets DS_PID, DS_SOCK, DS_URI (export "").  Its log
# goes to $T/NAME.log.
ds_start()
{
    local name=$1
    shift
    DS_SOCK="$T/$name.sock"
    "$DISKSERVE" -k "$DS_SOCK" "$@" >"$T/$name.log" 2>&1 &
    DS_PID=$!
    _ds_pids="$_ds_pids $DS_PID"
    wait_for_socket "$DS_SOCK" "$DS_PID"
    DS_URI="nbd+unix:///?socket=$DS_SOCK"
}

# ds_stop PID: SIGTERM and wait for exit; returns the exit status.
ds_stop()
{
    kill -TERM "$1"
    local rc=0
    wait "$1" || rc=$?
    return $rc
}

# qemu_nbd_start NAME [qemu-nbd options and image]: the oracle, on
# $T/NAME.sock.  Sets QN_PID, QN_SOCK, QN_URI.
qemu_nbd_start()
{
    local name=$1
    shift
    QN_SOCK="$T/$name.sock"
    qemu-nbd --socket="$QN_SOCK" --persistent --shared=16 "$@" \
        >"$T/$name.log" 2>&1 &
    QN_PID=$!
    _ds_pids="$_ds_pids $QN_PID"
    wait_for_socket "$QN_SOCK" "$QN_PID"
    QN_URI="nbd+unix:///?socket=$QN_SOCK"
}
