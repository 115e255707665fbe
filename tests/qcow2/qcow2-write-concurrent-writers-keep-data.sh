#!/bin/sh
# Claim: many writers at once into the same unallocated (or compressed,
# or backing-file, or zero) clusters, from four connections with many
# requests in flight, each writing its own piece, never allocate a
# cluster twice and never lose a piece: every piece reads back from the
# server and from qemu afterwards, and qemu-img check finds no error and
# no leak.  Pieces split clusters at sector and byte boundaries, and
# subclusters with extended L2 entries.  SEED=N replays.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"

# race URI SHADOW CLUSTER ALIGN: the pieces, written at once; the shadow
# gets them too.
race()
{
    /usr/bin/python3 -c '
import random, sys
import nbd
uri, shadow, cs, align, seed = sys.argv[1], sys.argv[2], \
    int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
hs = []
for _ in range(4):
    h = nbd.NBD()
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)
    h.connect_uri(uri)
    hs.append(h)
size = hs[0].get_size()
sh = open(shadow, "r+b")
for rnd in range(6):
    pieces = []
    # 24 clusters per round, each cut into 3 to 12 pieces.
    for c in rng.sample(range(size // cs), 24):
        cuts = sorted(set(rng.randrange(1, cs // align) * align
                          for _ in range(rng.randint(2, 11))))
        edges = [0] + cuts + [cs]
        for a, b in zip(edges, edges[1:]):
            pieces.append((c * cs + a, b - a))
    rng.shuffle(pieces)
    for i, (off, n) in enumerate(pieces):
        data = bytes([(rnd * 37 + i) % 251 + 1]) * n
        hs[i % 4].aio_pwrite(data, off)
        sh.seek(off)
        sh.write(data)
    for h in hs:
        while h.aio_in_flight() > 0:
            h.poll(-1)
sh.flush()
for off in range(0, size, 1 << 20):
    n = min(1 << 20, size - off)
    sh.seek(off)
    if hs[0].pread(n, off) != sh.read(n):
        sys.exit("FAIL: the server lost a piece near %d" % off)
for h in hs:
    h.shutdown()
' "$@" "$SEED"
}

# case NAME CLUSTER ALIGN CREATE: CREATE makes the image "$IMG".
case_()
{
    local name=$1 cs=$2 align=$3 shadow="$T/$1.shadow"
    IMG="$T/$1.qcow2"
    eval "$4" || fail "$name: making the image"
    # shellcheck disable=SC2046,SC2086
    qemu-img convert $(qemu_spec "$IMG") -O raw "$shadow"
    ds_start "$name" "$IMG"
    race "$DS_URI" "$shadow" "$cs" "$align" || fail "$name: race"
    ds_stop "$DS_PID" || fail "$name: diskserve exited with an error"
    judge "$name" "$IMG" "$shadow"
    echo "ok: $name"
}

back="$T/back.qcow2"
qemu-img create -q -f qcow2 "$back" 8M
qemu-io -f qcow2 -c "write -P 0x42 0 8M" "$back" >/dev/null
src="$T/src.raw"
qemu-img convert -f qcow2 -O raw "$back" "$src"

case_ empty 65536 1 \
    'qemu-img create -q -f qcow2 -o cluster_size=64k "$IMG" 8M'
case_ small 4096 512 \
    'qemu-img create -q -f qcow2 -o cluster_size=4k "$IMG" 8M'
case_ ext 65536 512 \
    'qemu-img create -q -f qcow2 -o cluster_size=64k,extended_l2=on "$IMG" 8M'
case_ backed 65536 1 \
    'qemu-img create -q -f qcow2 -b "$back" -F qcow2 "$IMG" 8M'
case_ ext-backed 32768 512 'qemu-img create -q -f qcow2 \
    -o cluster_size=32k,extended_l2=on -b "$back" -F qcow2 "$IMG" 8M'
case_ compressed 65536 1 'qemu-img convert -c -f raw -O qcow2 "$src" "$IMG"'
case_ zeroed 65536 1 'qemu-img create -q -f qcow2 -b "$back" -F qcow2 \
    "$IMG" 8M && qemu-io -f qcow2 -c "write -z 0 8M" "$IMG" >/dev/null'
