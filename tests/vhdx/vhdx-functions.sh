# Helpers for the VHDX tests, sourced after tests/functions.sh.

# refused IMAGE MESSAGE: diskserve -r refuses IMAGE with exit status 1
# and exactly one line holding MESSAGE that names the image.
refused()
{
    local rc=0
    timeout 10 "$DISKSERVE" -r -k "$T/never.sock" "$1" >"$T/out" 2>&1 ||
        rc=$?
    [ $rc -eq 1 ] || { cat "$T/out" >&2; fail "$1: exit status $rc"; }
    [ "$(grep -cF "$2" "$T/out")" = 1 ] &&
        grep -F "$2" "$T/out" | grep -qF "vhdx: $1:" || {
        cat "$T/out" >&2
        fail "$1: no one line naming the file with '$2'"
    }
    echo "refused: $(grep -F "$2" "$T/out")"
}
