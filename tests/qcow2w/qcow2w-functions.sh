# Helpers for the qcow2 write-path tests, sourced after tests/functions.sh.
#
# The server under test is diskserve; DS_TEST_SERVER=qemu-nbd runs the
# same test against qemu-nbd instead (writeback cache, 16 clients), which
# is how each test was checked before diskserve could write qcow2, and
# how a failure can be told apart from a fault of the test.
#
# The judges are QEMU's: qemu-img check must find no error and no leak,
# and qemu-img compare must find the image equal to the client's shadow.

require qemu-img qemu-io qemu-nbd
QW_SERVER=${DS_TEST_SERVER:-diskserve}
case $QW_SERVER in
diskserve | qemu-nbd) ;;
*) fail "DS_TEST_SERVER=$QW_SERVER: want diskserve or qemu-nbd" ;;
esac
QW_BIN="$abs_top_builddir/tests/qcow2w"

# A passphrase file, for the encrypted variants.
QW_PASS="$T/passphrase"
printf '%s' 'qcow2w write path' >"$QW_PASS"
QW_SECRET="--object secret,id=s0,file=$QW_PASS"

# qw_spec IMAGE [ENCRYPTED]: the image as qemu-img and qemu-io name it
# (with the secret's --object first for an encrypted one).
qw_spec()
{
    if [ "${2:-}" = luks ]; then
        echo "$QW_SECRET --image-opts" \
            "driver=qcow2,file.filename=$1,encrypt.key-secret=s0"
    else
        echo "-f qcow2 $1"
    fi
}

# qw_create_luks IMAGE SIZE [OPTIONS]: a LUKS-encrypted qcow2.  qemu's
# PBKDF timing with a short iter-time sometimes fails on a busy machine
# with "Unable to get accurate CPU usage": retry.
qw_create_luks()
{
    local img=$1 size=$2 tries=0
    local opts=encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10
    opts=$opts${3:+,$3}
    # shellcheck disable=SC2086
    until qemu-img create -q $QW_SECRET -f qcow2 -o "$opts" "$img" "$size"
    do
        tries=$((tries + 1))
        [ $tries -lt 5 ] || fail "qemu-img create of LUKS image $img"
    done
}

# qw_serve NAME IMAGE [ENCRYPTED]: serve IMAGE read-write with the server
# under test on $T/NAME.sock.  Sets QW_PID and QW_URI.
qw_serve()
{
    local name=$1 img=$2 enc=${3:-}
    if [ "$QW_SERVER" = qemu-nbd ]; then
        # shellcheck disable=SC2046
        qemu_nbd_start "$name" --cache=writeback $(qw_spec "$img" "$enc")
        QW_PID=$QN_PID
        QW_URI=$QN_URI
    else
        if [ "$enc" = luks ]; then
            ds_start "$name" -f qcow2 --key-file "$QW_PASS" "$img"
        else
            ds_start "$name" -f qcow2 "$img"
        fi
        QW_PID=$DS_PID
        QW_URI=$DS_URI
    fi
}

# qw_stop NAME: stop the server qw_serve started; fail unless it exits
# cleanly.
qw_stop()
{
    ds_stop "$QW_PID" || {
        tail -n 20 "$T/$1.log" >&2
        fail "$1: $QW_SERVER exited with status $?"
    }
}

# qw_check NAME IMAGE [ENCRYPTED]: qemu-img check must report neither
# errors nor leaks (exit status 0, and no corruptions, leaks or check
# errors in its JSON report).
qw_check()
{
    local name=$1 img=$2 enc=${3:-} rc=0
    # shellcheck disable=SC2046
    qemu-img check --output=json $(qw_spec "$img" "$enc") \
        >"$T/$name.check" 2>&1 || rc=$?
    if [ $rc -ne 0 ] || ! /usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
bad = [k for k in ("corruptions", "leaks", "check-errors",
                   "corruptions-fixed", "leaks-fixed") if r.get(k)]
sys.exit(1 if bad else 0)' "$T/$name.check"; then
        cat "$T/$name.check" >&2
        # shellcheck disable=SC2046
        qemu-img check $(qw_spec "$img" "$enc") >&2 || true
        fail "$name: qemu-img check exited $rc or found a problem"
    fi
}

# qw_compare NAME IMAGE RAW [ENCRYPTED]: the image reads, through qemu,
# exactly as RAW.
qw_compare()
{
    local name=$1 img=$2 raw=$3 enc=${4:-}
    if [ "$enc" = luks ]; then
        qemu-img convert $QW_SECRET --image-opts \
            "driver=qcow2,file.filename=$img,encrypt.key-secret=s0" \
            -O raw "$T/$name.final.raw" || fail "$name: qemu-img convert"
        cmp "$T/$name.final.raw" "$raw" >&2 ||
            fail "$name: the image differs from the shadow"
        rm -f "$T/$name.final.raw"
    else
        qemu-img compare -q -f qcow2 -F raw "$img" "$raw" ||
            fail "$name: the image differs from the shadow (qemu-img compare)"
    fi
}

# qw_guest_raw IMAGE RAW [ENCRYPTED]: what the guest sees in IMAGE, as a
# raw file.
qw_guest_raw()
{
    # shellcheck disable=SC2046
    qemu-img convert $(qw_spec "$1" "${3:-}") -O raw "$2" ||
        fail "qemu-img convert of $1"
}

# qw_seed: one seed per run, from QW_SEED or fresh; printed with the way
# to replay it.
qw_seed()
{
    QW_SEED=${QW_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
    echo "seed $QW_SEED (replay: QW_SEED=$QW_SEED make check TESTS=$1;" \
        "DS_TEST_SERVER=qemu-nbd runs it against qemu-nbd)"
}

# qw_make_raw FILE SIZE SEED: a seeded raw disk of SIZE bytes, in 64 KiB
# pieces that are zeros, random bytes, or sectors each repeating a short
# random phrase (which qemu-img convert -c compresses).  No two sectors
# hold the same bytes unless both are zero, so a wrong mapping shows.
qw_make_raw()
{
    /usr/bin/python3 - "$1" "$2" "$3" <<'PYEOF'
import random, struct, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
piece = 64 * 1024
with open(path, "wb") as f:
    for off in range(0, size, piece):
        kind = rng.randrange(4)
        if kind == 0:
            f.write(bytes(piece))
        elif kind == 1:
            f.write(rng.randbytes(piece))
        else:
            for s in range(off, off + piece, 512):
                phrase = struct.pack("<Q", s) + rng.randbytes(8)
                f.write(phrase * 32)
PYEOF
}
