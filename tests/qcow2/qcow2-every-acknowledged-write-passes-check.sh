#!/bin/sh
# Claim: after every acknowledged write, with no flush since the image
# was opened, the qcow2 file as it stands (copied while the server runs)
# passes qemu-img check: leaks allowed, no error.  Whatever reads the
# file between requests (a copy, a backup, qemu-img) must find metadata
# that holds together, not only after a flush.  Writes go one at a time,
# placed from the geometry so that runs of new host clusters start at,
# end at and cross refcount range boundaries (new refcount blocks, some
# outside the range they describe where 64-bit refcounts make a whole
# range one run), new L2 tables fall first or last in a range, and the
# refcount table grows; sequential and random writes too.  Cluster sizes
# from 512 bytes to 64 KiB, every refcount width, small clusters with
# wide refcounts and large clusters with narrow ones.  At the end the
# image passes qemu-img check with no leak and reads as the shadow.
# SEED=N replays.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/qcow2/qcow2-write-functions.sh"
ACK="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2-ackcopy.py"

# geometry CLUSTER_SIZE REFCOUNT_BITS: one image, served read-write, its
# writes judged one by one (qcow2-ackcopy.py), then as a whole.
geometry()
{
    local name="c$1-r$2${DS_OPTS:+-small-cache}" out
    local img="$T/$name.qcow2"
    out=$($ACK prepare "$img" "$1" "$2") || fail "$name: creating the image"
    # The virtual size, and where the fresh (unallocated) part starts.
    # shellcheck disable=SC2086
    set -- $out
    truncate -s "$1" "$T/$name.shadow"
    # shellcheck disable=SC2086
    ds_start "ds-$name" $DS_OPTS "$img"
    $ACK run "$DS_URI" "$img" "$T/$name.shadow" "$T/$name.copy" "$2" \
        --seed "$SEED" --name "$name" ||
        fail "$name: see above (server log: $(tail -3 "$T/ds-$name.log"))"
    ds_stop "$DS_PID" || fail "$name: diskserve exited with an error"
    judge "$name" "$img" "$T/$name.shadow"
    rm -f "$img" "$T/$name.shadow" "$T/$name.copy"
    echo "ok: $name"
}

# 512-byte clusters with every width: a 64-bit refcount block covers
# 64 clusters (32 KiB), exactly what one L2 table maps.
for bits in 64 32 16 8 4 2 1; do
    geometry 512 $bits
done
geometry 1024 64
geometry 1024 16
geometry 1024 2
geometry 2048 8
geometry 4096 64
geometry 4096 32
geometry 4096 4
geometry 4096 1
geometry 16384 64
# 64 KiB clusters: a 1-bit refcount block covers 32 GiB of host file;
# the image is preallocated (metadata only, sparse) up to just before
# its end.
geometry 65536 64
geometry 65536 8
geometry 65536 1
# A metadata cache of a few tables: refcount blocks are written back
# and reread all the time.
DS_OPTS="--cache-size 16k"
geometry 512 64
geometry 4096 16
