#!/bin/sh
# qcow2 images made by qemu-img convert -c, with 512-byte and 1 KiB
# clusters, nearly every cluster compressed, survive every crash state of
# a workload that overwrites, zeroes and trims parts of the compressed
# clusters: each partial write decompresses into a new cluster, and the
# compressed one's (shared) host cluster is freed only once no entry
# points to it.  A never-written sector must read its starting
# contents.  CRASH_SEED=N replays a seed.
set -eu
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
# The starting disk: each sector a short phrase naming it, repeated, so
# it compresses and no two sectors are alike.
prep='/usr/bin/python3 -c "
import struct, sys
out = open(sys.argv[1], \"wb\")
for s in range(2048):
    out.write((struct.pack(\"<Q\", s) + b\"zip\").ljust(16, b\".\") * 32)
" "$IMG.src" &&
qemu-img convert -c -f raw -O qcow2 -o cluster_size=$CS "$IMG.src" "$IMG" &&
rm -f "$IMG.src"'
for cs in 512 1k; do
    sh "$abs_top_srcdir/tests/crash/run-crash.sh" \
        --requests 250 --min-states 600 --prep "CS=$cs; $prep" \
        --workload-arg --mix=write:60,zero:10,trim:10,flush:10 \
        qcow2 "$seed" 800 \
        qemu-img create -q -f qcow2 -o cluster_size=$cs IMG 1M ||
        exit 1
done
