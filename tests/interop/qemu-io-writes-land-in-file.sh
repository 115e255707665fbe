#!/bin/sh
# Claim: qemu-io, as an NBD client over an nbd+unix URI (and nbd:// on
# TCP), writes patterns at chosen offsets (plain, unaligned, FUA,
# vectored, async, zeroes with and without unmap), reads every one back
# through the export, and each lands at exactly that place in the image
# file on the host with every other byte untouched; a discarded range
# reads back the same through NBD as in the file.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/interop/interop-functions.sh"
require qemu-io cmp
test_seed

size=$((4 * 1024 * 1024))
truncate -s $size "$T/before.img"
# Background data, so that zeroing shows.
write_data "$T/before.img" "$SEED" 0:4194304

cat >"$T/commands" <<'IO'
write -P 0xab 0 64k
write -P 0xcd 1M 4k
write -P 0x11 12345 1000
write -f -P 0x22 1536k 8k
writev -P 0x33 512k 4k 8k 4k
aio_write -P 0x44 768k 64k
aio_flush
write -z 2M 64k
write -z -u 2176k 64k
discard 3M 64k
flush
read -P 0xab 0 12345
read -P 0x11 12345 1000
read -P 0xab 13345 52191
read -P 0xcd 1M 4k
read -P 0x22 1536k 8k
read -P 0x33 512k 16k
read -P 0x44 768k 64k
read -P 0 2M 64k
read -P 0 2176k 64k
IO

# The same writes applied on the host, for comparison.
/usr/bin/python3 - "$T/before.img" "$T/expected.img" <<'PY'
import shutil, sys
shutil.copyfile(sys.argv[1], sys.argv[2])
K, M = 1024, 1024 * 1024
with open(sys.argv[2], "r+b") as f:
    for off, byte, n in ((0, 0xab, 64 * K), (1 * M, 0xcd, 4 * K),
                         (12345, 0x11, 1000), (1536 * K, 0x22, 8 * K),
                         (512 * K, 0x33, 16 * K), (768 * K, 0x44, 64 * K),
                         (2 * M, 0, 64 * K), (2176 * K, 0, 64 * K)):
        f.seek(off)
        f.write(bytes([byte]) * n)
PY

# check_io URI IMAGE: run the commands over URI, then compare IMAGE.
check_io()
{
    uri=$1 image=$2
    qemu-io -f raw "$uri" <"$T/commands" >"$T/io.out" 2>&1 || {
        cat "$T/io.out" >&2
        fail "$uri: qemu-io exited with an error"
    }
    if grep -qiE 'fail|error|mismatch' "$T/io.out"; then
        cat "$T/io.out" >&2
        fail "$uri: qemu-io reported a failure"
    fi
    [ "$(grep -c '^wrote\|> wrote' "$T/io.out")" -ge 6 ] &&
    [ "$(grep -c 'read [0-9]*/[0-9]* bytes' "$T/io.out")" = 9 ] || {
        cat "$T/io.out" >&2
        fail "$uri: qemu-io did not run every command"
    }

    # The discarded range: whatever it holds, NBD and the file agree.
    qemu-io -f raw -c 'read -v 3M 64k' "$uri" >"$T/discard.nbd" 2>&1 ||
        fail "$uri: reading the discarded range failed"
    qemu-io -f raw -r -U -c 'read -v 3M 64k' "$image" >"$T/discard.file" \
        2>&1 || fail "reading the discarded range of the file failed"
    sed '/ops;/d' "$T/discard.nbd" >"$T/discard.a"
    sed '/ops;/d' "$T/discard.file" >"$T/discard.b"
    cmp -s "$T/discard.a" "$T/discard.b" ||
        fail "$uri: the discarded range reads differently through NBD"

    # Pattern checking can fail: a wrong pattern is reported.
    qemu-io -f raw -c 'read -P 0x99 1M 4k' "$uri" >"$T/neg.out" 2>&1 || true
    grep -q 'Pattern verification failed' "$T/neg.out" ||
        fail "$uri: qemu-io accepted a wrong pattern"

    ds_stop "$DS_PID" || fail "$uri: diskserve exited with $? on SIGTERM"
    dd if="$image" of="$T/expected.img" bs=64K skip=48 seek=48 count=1 \
        conv=notrunc status=none
    cmp "$T/expected.img" "$image" || fail "$uri: the file differs"
}

cp "$T/before.img" "$T/unix.img"
ds_start unix -f raw "$T/unix.img"
check_io "$DS_URI" "$T/unix.img"

cp "$T/before.img" "$T/tcp.img"
ds_start_tcp tcp -f raw "$T/tcp.img"
check_io "$DS_TCP_URI" "$T/tcp.img"
echo PASS
