# Helpers for the qcow2 tests, sourced after tests/functions.sh.
#
# The oracle is QEMU: qemu-img/qemu-io build the images, qemu-img convert
# says what the guest sees, qemu-nbd says what block status should be.
# check_export runs every comparison on one image: the driver checker
# (tests/qcow2/qcow2-read-check), qemu-img compare against the export,
# the export's size, and nbdinfo --map for base:allocation and
# qemu:allocation-depth next to qemu-nbd -A on the same image.

require qemu-img qemu-io qemu-nbd nbdinfo /usr/bin/python3
READ_CHECK="$abs_top_builddir/tests/qcow2/qcow2-read-check"

# One seed per test run, printed so a failure can be replayed with
# SEED=N make check TESTS=...
SEED=${SEED:-$(date +%s)}
echo "seed: $SEED"

# stamp TAG OFFSET LENGTH: write a file ($T/stamp-...) whose every 8-byte
# word holds TAG in the top byte and its guest offset below, and print
# its name.  Data written with "qemu-io -c 'write -s FILE OFF LEN'" then
# shows where it landed, so a wrong mapping cannot read back right.
stamp()
{
    local f="$T/stamp-$1-$2-$3"
    /usr/bin/python3 - "$1" "$2" "$3" "$f" <<'EOF'
import sys, array
def num(s):
    mult = {'k': 1 << 10, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)
tag, off, length, path = int(sys.argv[1], 0), num(sys.argv[2]), \
    num(sys.argv[3]), sys.argv[4]
first = off - off % 8
words = array.array('Q', ((tag << 56) | o
                          for o in range(first, off + length + 8, 8)))
if sys.byteorder == 'little':
    words.byteswap()
data = words.tobytes()[off - first:off - first + length]
open(path, 'wb').write(data)
EOF
    echo "$f"
}

# qio IMAGE COMMAND...: run qemu-io commands on a qcow2 image quietly.
qio()
{
    local img=$1 n
    shift
    n=$#
    while [ "$n" -gt 0 ]; do
        set -- "$@" -c "$1"
        shift
        n=$((n - 1))
    done
    qemu-io -f qcow2 "$@" "$img" >/dev/null || fail "qemu-io $* on $img"
}

# Options for qemu tools and diskserve, set by a test before
# check_export when the image needs them:
#   QEMU_OPTS: e.g. --object secret,...  (qemu-img, qemu-nbd)
#   QEMU_SPEC: the image as qemu names it, default "-f qcow2 IMAGE"
#   DS_OPTS:   extra diskserve options (-l, --key-file ...)
#   CHECK_OPTS: extra qcow2-read-check options (-s, -k, -c ...)
#   QNBD_OPTS: extra qemu-nbd options (-l ...)
#   CONVERT_OPTS: extra qemu-img convert options (-l ...)
QEMU_OPTS=""
QEMU_SPEC=""
DS_OPTS=""
CHECK_OPTS=""
QNBD_OPTS=""
CONVERT_OPTS=""

# check_export NAME IMAGE: run every comparison on IMAGE.
check_export()
{
    local name=$1 img=$2
    local spec=${QEMU_SPEC:-"-f qcow2 $img"}
    local raw="$T/$name.raw"

    # shellcheck disable=SC2086
    qemu-img convert $QEMU_OPTS $CONVERT_OPTS $spec -O raw "$raw" ||
        fail "$name: qemu-img convert"

    # shellcheck disable=SC2086
    "$READ_CHECK" -S "$SEED" -n 200 $CHECK_OPTS "$img" "$raw" \
        >"$T/$name.check" 2>&1 || {
        cat "$T/$name.check" >&2
        fail "$name: driver check"
    }

    # shellcheck disable=SC2086
    ds_start "ds-$name" -r $DS_OPTS "$img"
    local size
    size=$(nbdinfo --size "$DS_URI")
    [ "$size" = "$(stat -c %s "$raw")" ] ||
        fail "$name: export size $size, qemu says $(stat -c %s "$raw")"
    qemu-img compare -f raw -F raw "$raw" "$DS_URI" >"$T/$name.cmp" 2>&1 || {
        cat "$T/$name.cmp" >&2
        fail "$name: export differs from what qemu reads"
    }
    if [ -z "$QEMU_SPEC" ] && [ -z "$CONVERT_OPTS" ]; then
        qemu-img compare -f qcow2 -F raw "$img" "$DS_URI" \
            >"$T/$name.cmp" 2>&1 || {
            cat "$T/$name.cmp" >&2
            fail "$name: export differs from the image read by qemu"
        }
    fi

    # shellcheck disable=SC2086
    qemu_nbd_start "qn-$name" -r -A $QEMU_OPTS $QNBD_OPTS $spec
    for ctx in base:allocation qemu:allocation-depth; do
        nbdinfo --map="$ctx" "$DS_URI" >"$T/$name.ds.map" ||
            fail "$name: nbdinfo --map=$ctx on diskserve"
        nbdinfo --map="$ctx" "$QN_URI" >"$T/$name.qn.map" ||
            fail "$name: nbdinfo --map=$ctx on qemu-nbd"
        if ! cmp -s "$T/$name.ds.map" "$T/$name.qn.map"; then
            echo "--- qemu-nbd $ctx / +++ diskserve" >&2
            diff -u "$T/$name.qn.map" "$T/$name.ds.map" >&2 || true
            fail "$name: $ctx map differs from qemu-nbd"
        fi
    done
    ds_stop "$DS_PID" || fail "$name: diskserve exited with an error"
    kill "$QN_PID"
    wait "$QN_PID" 2>/dev/null || true
    echo "ok: $name ($(wc -l <"$T/$name.ds.map") depth extents)"
}
