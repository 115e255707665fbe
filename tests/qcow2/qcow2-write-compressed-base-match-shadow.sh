#!/bin/sh
# Claim: writes, zero writes and trims into compressed clusters (zlib and
# zstd, 4 KiB and 64 KiB clusters, with extended L2 entries too) give
# each touched cluster a normal one holding the decompressed data around
# the new bytes, and free the compressed bytes: after seeded workloads
# qemu-img check finds no error and no leak (the compressed clusters'
# host clusters, shared between several, are freed exactly when the last
# one goes), and qemu reads the workload's shadow.  SEED=N replays.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"

src="$T/src.raw"
/usr/bin/python3 - "$src" <<'PY'
import random, sys
rng = random.Random(7)
with open(sys.argv[1], "wb") as f:
    for i in range(16 * 256):
        # 4 KiB pieces: half compressible text, half zeros or noise.
        k = i % 4
        if k == 0:
            f.write(((b"compressed %08d " % i) * 205)[:4096])
        elif k == 1:
            f.write(bytes(4096))
        elif k == 2:
            f.write(bytes(rng.getrandbits(8) for _ in range(4096)))
        else:
            f.write(bytes([i & 0xff]) * 4096)
PY

for v in "zlib 64k off" "zstd 4k off" "zlib 64k on"; do
    set -- $v
    name="$1-$2-ext$3"
    img="$T/$name.qcow2"
    qemu-img convert -c -f raw -O qcow2 \
        -o compression_type=$1,cluster_size=$2,extended_l2=$3 "$src" "$img"
    write_and_judge "$name" "$img" --hot 16777216 --max-len 20000
done

# Overwriting every compressed cluster in full leaves no compressed data
# and nothing leaked.
img="$T/all.qcow2"
qemu-img convert -c -f raw -O qcow2 "$src" "$img"
ds_start all "$img"
qemu-io -f raw -c "write -P 0x3c 0 16M" "$DS_URI" >/dev/null
ds_stop "$DS_PID"
qemu-img check "$img" >"$T/all.chk" 2>&1 || fail "all: $(cat "$T/all.chk")"
grep -q " 0.00% compressed" "$T/all.chk" || fail "all: $(cat "$T/all.chk")"
qemu-io -f qcow2 -c "read -P 0x3c 0 16M" "$img" >/dev/null || fail "all: data"
echo "ok: every compressed cluster overwritten"
