#!/bin/sh
# Claim: the PBKDF2 work one LUKS open runs is bounded.  A header whose
# key slot or master key digest declares 2^26 iterations (the most a
# header may declare), or whose second active slot does when the
# passphrase fits no earlier slot, is refused by diskserve-img map and by
# the server within seconds, with one line naming the file, the slot and
# the iteration count, before that PBKDF2 runs; the unmodified image
# opens and reads what qemu wrote; --luks-max-iterations (and the config
# file key luks-max-iterations) sets the limit.
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img qemu-io timeout

POKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"
printf 'correct horse battery staple' >"$T/pass"
printf 'wrong' >"$T/wrong"
img="$T/luks.qcow2"

# qemu's PBKDF timing with a short iter-time sometimes fails with
# "Unable to get accurate CPU usage" on a busy machine: retry.
tries=0
until qemu-img create -q -f qcow2 --object secret,id=s0,file="$T/pass" \
    -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 \
    "$img" 4M; do
    tries=$((tries + 1))
    [ $tries -lt 5 ] || fail "qemu-img create"
done
qemu-io --object secret,id=s0,file="$T/pass" --image-opts \
    -c "write -P 0x5a 1M 1M" \
    "driver=qcow2,file.filename=$img,encrypt.key-secret=s0" >/dev/null ||
    fail "qemu-io write"

# The LUKS header's offset, from the full disk encryption extension.
hdr=$(/usr/bin/python3 - "$img" <<'PY'
import struct, sys
d = open(sys.argv[1], 'rb').read(65536)
o = struct.unpack_from('>I', d, 100)[0]
while True:
    t, n = struct.unpack_from('>II', d, o)
    if t == 0:
        sys.exit('no FDE extension')
    if t == 0x0537be77:
        print(struct.unpack_from('>Q', d, o + 8)[0])
        break
    o += 8 + (n + 7) // 8 * 8
PY
) || fail "finding the LUKS header"
MAX=$((1 << 26))
DIGEST_ITER=$((hdr + 164))
SLOT0_ITER=$((hdr + 208 + 4))
SLOT1=$((hdr + 208 + 48))

# refused NAME IMAGE KEY WHAT [options]: diskserve-img map and the server
# both refuse IMAGE within 10 s, logging WHAT and the 2^26 count.
refused()
{
    local name=$1 image=$2 key=$3 what=$4 t0 rc
    shift 4
    for prog in map server; do
        t0=$(date +%s)
        rc=0
        if [ $prog = map ]; then
            timeout 60 "$DISKSERVE_IMG" map --output=json \
                --key-file "$key" "$@" "$image" >/dev/null 2>"$T/err" ||
                rc=$?
        else
            timeout 60 "$DISKSERVE" -r -k "$T/x.sock" --key-file "$key" \
                "$@" "$image" >/dev/null 2>"$T/err" || rc=$?
        fi
        [ $rc -ne 0 ] || fail "$name: $prog opened the image"
        [ $(($(date +%s) - t0)) -le 10 ] ||
            fail "$name: $prog took $(($(date +%s) - t0)) s to refuse"
        [ "$(grep -c 'luks-max-iterations' "$T/err")" -eq 1 ] ||
            fail "$name: $prog: no one-line reason: $(cat "$T/err")"
        grep "luks-max-iterations" "$T/err" | grep -F "$image" |
            grep -F "$what" | grep -q "$MAX" ||
            fail "$name: $prog: unclear message: $(cat "$T/err")"
    done
}

# A slot declaring 2^26 iterations: refused before its PBKDF2.
cp "$img" "$T/slot0.qcow2"
$POKE set "$T/slot0.qcow2" $SLOT0_ITER '>I' $MAX
refused slot0 "$T/slot0.qcow2" "$T/pass" "key slot 0"

# The master key digest declaring 2^26.
cp "$img" "$T/digest.qcow2"
$POKE set "$T/digest.qcow2" $DIGEST_ITER '>I' $MAX
refused digest "$T/digest.qcow2" "$T/pass" "master key digest"

# A second active slot with 2^26, reached with a wrong passphrase (the
# "no key slot matches" case): slot 0 is tried, slot 1 is refused.
cp "$img" "$T/slot1.qcow2"
$POKE set "$T/slot1.qcow2" $SLOT1 '>I' 0x00ac71f3
$POKE set "$T/slot1.qcow2" $((SLOT1 + 4)) '>I' $MAX
refused slot1 "$T/slot1.qcow2" "$T/wrong" "key slot 1"
# With the right passphrase slot 0 matches and slot 1 is never tried.
"$DISKSERVE_IMG" map --output=json --key-file "$T/pass" "$T/slot1.qcow2" \
    >/dev/null 2>"$T/err" ||
    fail "slot1: right passphrase refused: $(cat "$T/err")"

# The unmodified image opens and reads what qemu wrote.
"$DISKSERVE_IMG" map --output=json --key-file "$T/pass" "$img" \
    >/dev/null 2>"$T/err" || fail "map refused the image: $(cat "$T/err")"
ds_start srv -r --key-file "$T/pass" "$img"
qemu-io -r -f raw -c "read -P 0x5a 1M 1M" -c "read -P 0 0 1M" \
    -c "read -P 0 2M 2M" "$DS_URI" >"$T/read" ||
    fail "reading through the server: $(cat "$T/read")"
grep -q "Pattern verification failed" "$T/read" &&
    fail "read back wrong data: $(cat "$T/read")"
ds_stop "$DS_PID" || fail "server exit status"

# The limit is configurable: 1 refuses even the unmodified image, a large
# one opens it; the config file's [server] key too.
for prog in map server; do
    rc=0
    if [ $prog = map ]; then
        "$DISKSERVE_IMG" map --output=json --key-file "$T/pass" \
            --luks-max-iterations 1 "$img" >/dev/null 2>"$T/err" || rc=$?
    else
        "$DISKSERVE" -r -k "$T/x.sock" --key-file "$T/pass" \
            --luks-max-iterations 1 "$img" 2>"$T/err" || rc=$?
    fi
    [ $rc -ne 0 ] || fail "limit 1: $prog opened the image"
    grep -q "limit of 1 per open" "$T/err" ||
        fail "limit 1: $prog: unclear message: $(cat "$T/err")"
done
"$DISKSERVE_IMG" map --output=json --key-file "$T/pass" \
    --luks-max-iterations 100000000 "$img" >/dev/null 2>"$T/err" ||
    fail "a large limit refused the image: $(cat "$T/err")"
cat >"$T/conf" <<EOF
[server]
socket = $T/c.sock
luks-max-iterations = 1
[export]
image = $img
key-file = $T/pass
read-only = yes
EOF
if "$DISKSERVE" --config "$T/conf" 2>"$T/err"; then
    fail "config limit 1: the server opened the image"
fi
grep -q "limit of 1 per open" "$T/err" ||
    fail "config limit 1: unclear message: $(cat "$T/err")"
if "$DISKSERVE_IMG" map --output=json --luks-max-iterations 0 \
    --key-file "$T/pass" "$img" >/dev/null 2>"$T/err"; then
    fail "--luks-max-iterations 0 accepted"
fi
exit 0
