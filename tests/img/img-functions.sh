# Helpers for the diskserve-img tests, sourced after tests/functions.sh.
#
# qemu-img is the oracle: images built by diskserve-img must pass
# qemu-img check, and diskserve-img's reports must say what qemu-img's
# say about the same file.

require qemu-img qemu-io /usr/bin/python3
POKE="/usr/bin/python3 $abs_top_srcdir/tests/img/imgpoke.py"
IMGCMP="/usr/bin/python3 $abs_top_srcdir/tests/img/imgcmp.py"

# img ARGS...: run diskserve-img.
img()
{
    "$DISKSERVE_IMG" "$@"
}

# qemu_clean FILE: qemu-img check must find nothing.
qemu_clean()
{
    qemu-img check "$1" >"$T/qemu-clean.out" 2>&1 ||
        { cat "$T/qemu-clean.out" >&2; fail "qemu-img check $1 not clean"; }
}

# check_agrees FILE [OPTIONS]: diskserve-img check and qemu-img check
# (with the same OPTIONS, each on its own copy when repairing) report the
# same counts and exit with the same status.
check_agrees()
{
    local f=$1 ours=$1 theirs=$1
    shift
    case " $* " in
    *" -r "*)
        ours="$T/ours-$(basename "$f")"
        theirs="$T/qemu-$(basename "$f")"
        cp "$f" "$ours"
        cp "$f" "$theirs"
        ;;
    esac
    local ro=0 rq=0
    img check "$@" "$ours" >"$T/ours.out" 2>"$T/ours.err" || ro=$?
    qemu-img check "$@" "$theirs" >"$T/qemu.out" 2>"$T/qemu.err" || rq=$?
    if [ "$ro" != "$rq" ] ||
       ! $IMGCMP check "$T/ours.out" "$T/qemu.out"; then
        echo "--- diskserve-img check $* (exit $ro):" >&2
        cat "$T/ours.out" "$T/ours.err" >&2
        echo "--- qemu-img check $* (exit $rq):" >&2
        cat "$T/qemu.out" "$T/qemu.err" >&2
        fail "check $* $f: diskserve-img and qemu-img disagree"
    fi
    CHECKED="$ours"
    CHECK_STATUS=$ro
}
