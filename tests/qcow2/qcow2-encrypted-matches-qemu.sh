#!/bin/sh
# Claim: LUKS and legacy AES encrypted images, unlocked with the
# passphrase from --key-file, read exactly as qemu reads them (LUKS IVs
# from host offsets, AES IVs from guest offsets: a wrong choice reads
# garbage), with qemu-nbd's block status; a missing key file and a wrong
# passphrase are refused at start with a clear message.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-functions.sh"

printf '%s' 'correct horse battery staple' >"$T/pass"
QEMU_OPTS="--object secret,id=sec0,file=$T/pass"

for fmt in luks aes; do
    img="$T/$fmt.qcow2"
    extra=""
    [ $fmt = luks ] && extra=",encrypt.iter-time=10"
    # qemu's PBKDF timing with a short iter-time sometimes fails with
    # "Unable to get accurate CPU usage" on a busy machine: retry.
    tries=0
    # shellcheck disable=SC2086
    until qemu-img create -q $QEMU_OPTS -f qcow2 \
        -o encrypt.format=$fmt,encrypt.key-secret=sec0$extra "$img" 8M; do
        tries=$((tries + 1))
        [ $tries -lt 5 ] || fail "$fmt: qemu-img create"
    done
    spec="driver=qcow2,file.filename=$img,encrypt.key-secret=sec0"
    # shellcheck disable=SC2086
    qemu-io $QEMU_OPTS --image-opts \
        -c "write -s $(stamp 1 1000 1M) 1000 1M" \
        -c "write -z 3M 64k" \
        -c "write -s $(stamp 2 5M 3000) 5M 3000" \
        -c "write -s $(stamp 3 7M 1M) 7M 1M" "$spec" >/dev/null
    QEMU_SPEC="--image-opts $spec"
    DS_OPTS="--key-file $T/pass"
    CHECK_OPTS="-k $T/pass"
    check_export "$fmt" "$img"

    # Without a key file, and with a wrong passphrase: refused.
    if "$DISKSERVE" -r -k "$T/x.sock" "$img" 2>"$T/err"; then
        fail "$fmt: opened without a key file"
    fi
    grep -q "passphrase file is required" "$T/err" ||
        fail "$fmt: unclear message: $(cat "$T/err")"
    if [ $fmt = luks ]; then
        printf 'wrong' >"$T/wrong"
        if "$DISKSERVE" -r --key-file "$T/wrong" -k "$T/x.sock" "$img" \
            2>"$T/err"; then
            fail "luks: opened with a wrong passphrase"
        fi
        grep -q "passphrase" "$T/err" ||
            fail "luks: unclear message: $(cat "$T/err")"
    fi
done
