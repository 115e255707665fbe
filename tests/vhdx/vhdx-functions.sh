# Helpers for the VHDX tests, sourced after tests/functions.sh.

# refused IMAGE MESSAGE [OPTIONS]: diskserve (with OPTIONS, -r if none)
# refuses IMAGE with exit status 1 and exactly one line holding MESSAGE
# that names the image.
refused()
{
    local img=$1 msg=$2 rc=0
    shift 2
    [ $# -gt 0 ] || set -- -r
    timeout 10 "$DISKSERVE" "$@" -k "$T/never.sock" "$img" >"$T/out" 2>&1 ||
        rc=$?
    set -- "$img" "$msg"
    [ $rc -eq 1 ] || { cat "$T/out" >&2; fail "$1: exit status $rc"; }
    [ "$(grep -cF "$2" "$T/out")" = 1 ] &&
        grep -F "$2" "$T/out" | grep -qF "vhdx: $1:" || {
        cat "$T/out" >&2
        fail "$1: no one line naming the file with '$2'"
    }
    echo "refused: $(grep -F "$2" "$T/out")"
}
