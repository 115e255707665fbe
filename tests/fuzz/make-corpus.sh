#!/bin/bash
# Make the seed corpus of a fuzz target in DIR (created; existing files
# are kept, so libFuzzer's additions survive a rerun).
#
#   make-corpus.sh qcow2-open DIR     small qcow2 images from qemu-img
#   make-corpus.sh qcow2-check DIR    the same images
#   make-corpus.sh vhdx DIR           qemu-img's VHDX files as piece lists
#   make-corpus.sh luks DIR           LUKS1 headers from qemu-img, cut
#                                     after the first slot's key material
#   make-corpus.sh requests DIR       request streams for every image kind
#   make-corpus.sh handshake DIR      recorded client byte streams
#
# Every image has a small virtual size and stays under 256 KiB; names
# describe what each one exercises.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: make-corpus.sh qcow2-open|qcow2-check|vhdx|luks|requests|handshake DIR}
out=${2:?usage: make-corpus.sh qcow2-open|qcow2-check|vhdx|luks|requests|handshake DIR}
mkdir -p "$out"

case $target in
handshake)
    exec /usr/bin/python3 "$here/make-handshake-corpus.py" "$out"
    ;;
requests)
    exec /usr/bin/python3 "$here/make-requests-corpus.py" "$out"
    ;;
qcow2-open|qcow2-check|vhdx|luks)
    ;;
*)
    echo "make-corpus.sh: unknown target '$target'" >&2
    exit 2
    ;;
esac

command -v qemu-img >/dev/null || { echo "make-corpus.sh: no qemu-img" >&2; exit 77; }
command -v qemu-io >/dev/null || { echo "make-corpus.sh: no qemu-io" >&2; exit 77; }
w=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-corpus.XXXXXX")
trap 'rm -rf "$w"' EXIT

if [ "$target" = luks ]; then
    # luks NAME OPTIONS: a header with slot 0 under "fuzz" (iteration
    # counts from 1 ms of PBKDF2), cut after slot 0's key material.
    # qemu-img times PBKDF2 to pick the counts and gives up ("Unable to
    # get accurate CPU usage") when a loaded machine gives it no CPU time
    # within the millisecond: try again.
    luks()
    {
        local try
        for try in 1 2 3 4 5 6 7 8 9 10; do
            qemu-img create -q -f luks --object secret,id=s0,data=fuzz \
                -o key-secret=s0,iter-time=1${2:+,$2} "$w/$1" 0 \
                2>"$w/err" && break
            [ $try -lt 10 ] || { cat "$w/err" >&2; return 1; }
        done
        /usr/bin/python3 - "$w/$1" "$out/$1" <<'PY'
import struct, sys
d = open(sys.argv[1], 'rb').read()
key_bytes = struct.unpack('>I', d[108:112])[0]
offset, stripes = struct.unpack('>II', d[208 + 40:208 + 48])
open(sys.argv[2], 'wb').write(d[:offset * 512 + key_bytes * stripes])
PY
    }
    luks aes-xts-sha256.luks
    luks aes-128-xts.luks cipher-alg=aes-128
    luks aes-cbc-essiv.luks cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256
    luks aes-cbc-plain.luks cipher-mode=cbc,ivgen-alg=plain
    luks sha1.luks hash-alg=sha1
    luks sha512.luks hash-alg=sha512
    exit 0
fi

if [ "$target" = vhdx ]; then
    # vhdx NAME SIZE OPTIONS: a VHDX file with data in three blocks, one
    # zeroed range and one discarded.
    vhdx()
    {
        qemu-img create -q -f vhdx -o "$3" "$w/$1" "$2"
        qemu-io -f vhdx -c 'write -P 0x5a 0 64k' -c 'write -z 1M 64k' \
            -c 'write -P 0x11 3M 8k' -c 'discard 3M 4k' "$w/$1" >/dev/null
    }
    vhdx dynamic-1m.vhdx 8M block_size=1M
    vhdx dynamic-8m.vhdx 24M block_size=8M,log_size=1M
    vhdx dynamic-zero-state.vhdx 8M block_size=1M,block_state_zero=on
    vhdx dynamic-no-zero-state.vhdx 8M block_size=1M,block_state_zero=off
    vhdx fixed.vhdx 4M subformat=fixed,block_size=1M
    qemu-img create -q -f vhdx -o block_size=1M "$w/empty.vhdx" 4M
    # A pending log of two entries: one data sector, then a BAT update
    # mapping block 2 past the end of the file plus a zero descriptor.
    log="/usr/bin/python3 $here/../vhdx/vhdxlog.py"
    g=0badc0de-1234-4321-8765-0123456789ab
    cp "$w/dynamic-1m.vhdx" "$w/pending-log.vhdx"
    set -- $($log info "$w/pending-log.vhdx")
    eof=$(( ($4 + 1048575) / 1048576 * 1048576 ))
    $log guid "$w/pending-log.vhdx" $g
    $log entry "$w/pending-log.vhdx" 0 10 0 $g eof eof data:$((eof - 4096)):1
    $log entry "$w/pending-log.vhdx" 8192 11 0 $g eof $((eof + 1048576)) \
        bat:2:$((eof | 6)) zero:$((eof - 8192)):4096 \
        data:$((eof + 4096)):2
    /usr/bin/python3 "$here/make-vhdx-corpus.py" "$out" "$w"/*.vhdx
    exit 0
fi

# img NAME SIZE [create options]: a new image (16 KiB clusters unless
# the options say otherwise) with a little data: a pattern at the
# start, a zeroed range, a discarded one.
img()
{
    local name=$1 size=$2
    shift 2
    qemu-img create -q -f qcow2 -o cluster_size=16k "$@" "$w/$name" "$size"
    qemu-io -f qcow2 -c 'write -P 0x5a 0 64k' -c 'write -z 64k 64k' \
        -c "write -P 0x11 100k 8k" -c "discard 100k 4k" "$w/$name" >/dev/null
}

img v3-16k.qcow2 1M
qemu-img create -q -f qcow2 "$w/v3-64k-empty.qcow2" 1M
img v2-compat.qcow2 1M -o compat=0.10
img cluster-512.qcow2 256k -o cluster_size=512
img cluster-4k.qcow2 1M -o cluster_size=4k
img cluster-32k.qcow2 1M -o cluster_size=32k
img refcount-1bit.qcow2 1M -o refcount_bits=1
img refcount-64bit.qcow2 1M -o refcount_bits=64,cluster_size=4k
img lazy-refcounts.qcow2 1M -o lazy_refcounts=on
img extended-l2-32k.qcow2 1M -o extended_l2=on,cluster_size=32k
img extended-l2-16k.qcow2 1M -o extended_l2=on,cluster_size=16k
img zstd.qcow2 1M -o compression_type=zstd
img prealloc-metadata.qcow2 128k -o preallocation=metadata,cluster_size=4k

# Compressed clusters, zlib and zstd.
qemu-img create -q -f raw "$w/raw" 256k
qemu-io -f raw -c 'write -P 0x33 0 128k' -c 'write -P 0 128k 64k' "$w/raw" >/dev/null
qemu-img convert -c -f raw -O qcow2 -o cluster_size=4k "$w/raw" "$w/compressed-zlib.qcow2"
qemu-img convert -c -f raw -O qcow2 -o cluster_size=4k,compression_type=zstd \
    "$w/raw" "$w/compressed-zstd.qcow2"

# Internal snapshots: data written before and after.
img snapshots.qcow2 1M -o cluster_size=4k
qemu-img snapshot -c one "$w/snapshots.qcow2"
qemu-io -f qcow2 -c 'write -P 0x77 0 8k' "$w/snapshots.qcow2" >/dev/null
qemu-img snapshot -c two "$w/snapshots.qcow2"

# A backing file named relative to the image (the fuzzer runs images
# from a private directory, where the name resolves to the image itself
# or to nothing).
qemu-img create -q -f qcow2 -o cluster_size=4k "$w/base.qcow2" 1M
qemu-img create -q -f qcow2 -F qcow2 -b base.qcow2 -o cluster_size=4k \
    "$w/backing-name.qcow2" 1M
qemu-io -f qcow2 -c 'write -P 0x44 4k 4k' "$w/backing-name.qcow2" >/dev/null
rm "$w/base.qcow2"
qemu-img create -q -f qcow2 -F raw -b img -u -o cluster_size=4k \
    "$w/backing-raw-self.qcow2" 1M

# Dirty bitmaps (two, as the check finding needed), one disabled.
img bitmaps.qcow2 1M -o cluster_size=4k
qemu-img bitmap --add "$w/bitmaps.qcow2" b0
qemu-img bitmap --add -g 64k "$w/bitmaps.qcow2" b1
qemu-io -f qcow2 -c 'write -P 0x66 0 32k' "$w/bitmaps.qcow2" >/dev/null
qemu-img bitmap --disable "$w/bitmaps.qcow2" b1

# An image left with the dirty bit set (lazy refcounts, writes not
# flushed by a clean close).
qemu-img create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4k \
    "$w/dirty.qcow2" 1M
sh -c 'qemu-io -f qcow2 -c "write -P 0x21 0 16k" -c abort "$1" \
    >/dev/null 2>&1' sh "$w/dirty.qcow2" 2>/dev/null || true

# Regression: the same dirty image with refcount table entry 121 past
# the end of the file: the repair at open rebuilds the refcounts with no
# reference past the end (a qsort of an empty, NULL array once tripped
# UBSan there).
cp "$w/dirty.qcow2" "$w/dirty-reftable-past-eof.qcow2"
/usr/bin/python3 - "$w/dirty-reftable-past-eof.qcow2" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(48)
    rt = struct.unpack(">Q", f.read(8))[0]
    f.seek(rt + 121 * 8)
    f.write(struct.pack(">Q", 0x4100000000))
PY

for f in "$w"/*.qcow2; do
    size=$(stat -c %s "$f")
    if [ "$size" -gt 262144 ]; then
        echo "make-corpus.sh: $(basename "$f") is $size bytes" >&2
        exit 1
    fi
    cp "$f" "$out/"
done
