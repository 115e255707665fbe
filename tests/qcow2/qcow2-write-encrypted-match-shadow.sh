#!/bin/sh
# Claim: LUKS and legacy AES encrypted images are written encrypted with
# the right IVs (LUKS: host offsets, so a cluster moved by copy-on-write
# is encrypted for its new place; AES: guest offsets), partial sectors
# read, merged and rewritten without losing concurrent writers' bytes:
# after seeded workloads of unaligned writes, zero writes and trims,
# qemu-img check finds nothing and qemu, given the passphrase, reads the
# workload's shadow.  SEED=N replays.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"

printf '%s' 'correct horse battery staple' >"$T/pass"
QEMU_OPTS="--object secret,id=sec0,file=$T/pass"
DS_OPTS="--key-file $T/pass"

for fmt in luks aes; do
    for cs in 64k 4k; do
        img="$T/$fmt-$cs.qcow2"
        extra=""
        [ $fmt = luks ] && extra=",encrypt.iter-time=10"
        # qemu's PBKDF timing with a short iter-time sometimes fails on a
        # busy machine: retry.
        tries=0
        # shellcheck disable=SC2086
        until qemu-img create -q $QEMU_OPTS -f qcow2 -o \
            cluster_size=$cs,encrypt.format=$fmt,encrypt.key-secret=sec0$extra \
            "$img" 16M; do
            tries=$((tries + 1))
            [ $tries -lt 5 ] || fail "$fmt: qemu-img create"
        done
        QEMU_SPEC="--image-opts driver=qcow2,file.filename=$img"
        QEMU_SPEC="$QEMU_SPEC,encrypt.key-secret=sec0"
        # shellcheck disable=SC2086
        qemu-io $QEMU_OPTS $QEMU_SPEC -c "write -P 0x5a 0 200k" >/dev/null
        write_and_judge "$fmt-$cs" "$img" --max-len 40000
    done
done
