# Helpers for the qcow2 write tests, sourced after tests/functions.sh.
#
# The judges are QEMU's: qemu-img check must find nothing wrong with an
# image diskserve wrote, and qemu-img compare must find it equal to a
# shadow raw file that the workload client (qcow2-write-workload.py)
# kept up to date request by request.

require qemu-img qemu-io nbdinfo /usr/bin/python3
WORKLOAD="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2-write-workload.py"

# One seed per test run, printed so a failure can be replayed with
# SEED=N make check TESTS=...
SEED=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed: $SEED"

# Options for qemu tools and diskserve, set by a test when the image
# needs them:
#   QEMU_OPTS: e.g. --object secret,...  (qemu-img)
#   QEMU_SPEC: the image as qemu names it, default "-f qcow2 IMAGE"
#   DS_OPTS:   extra diskserve options (--key-file ...)
QEMU_OPTS=""
QEMU_SPEC=""
DS_OPTS=""

# qemu_spec IMAGE: how qemu names IMAGE.
qemu_spec()
{
    echo "${QEMU_SPEC:-"-f qcow2 $1"}"
}

# judge NAME IMAGE SHADOW: qemu-img check finds no error and no leak, and
# qemu reads IMAGE as SHADOW.
judge()
{
    local name=$1 img=$2 shadow=$3
    # shellcheck disable=SC2046,SC2086
    qemu-img check $QEMU_OPTS $(qemu_spec "$img") >"$T/$name.chk" 2>&1 || {
        cat "$T/$name.chk" >&2
        fail "$name: qemu-img check"
    }
    local other="-F raw $shadow"
    case ${QEMU_SPEC:-} in
    --image-opts*) other="driver=raw,file.filename=$shadow" ;;
    esac
    # shellcheck disable=SC2046,SC2086
    qemu-img compare $QEMU_OPTS $(qemu_spec "$img") $other \
        >"$T/$name.cmp" 2>&1 || {
        cat "$T/$name.cmp" >&2
        fail "$name: qemu reads something else than the shadow"
    }
}

# write_and_judge NAME IMAGE [workload options]: serve IMAGE read-write,
# run the workload against it and a shadow made from what qemu reads
# now, stop the server (which must exit 0) and judge the image.
write_and_judge()
{
    local name=$1 img=$2
    shift 2
    local shadow="$T/$name.shadow"
    # shellcheck disable=SC2046,SC2086
    qemu-img convert $QEMU_OPTS $(qemu_spec "$img") -O raw "$shadow" ||
        fail "$name: qemu-img convert"
    # shellcheck disable=SC2086
    ds_start "ds-$name" $DS_OPTS "$img"
    $WORKLOAD "$DS_URI" "$shadow" --seed "$SEED" "$@" ||
        fail "$name: workload (log: $(tail -3 "$T/ds-$name.log"))"
    ds_stop "$DS_PID" || fail "$name: diskserve exited with an error"
    judge "$name" "$img" "$shadow"
    echo "ok: $name"
}
