#!/bin/sh
# qcow2 images survive every crash state of workloads that create new
# refcount blocks, for every refcount width (1 to 64 bits) with 512-byte
# and 1 KiB clusters.  A refcount block describes cs * 8 / bits host
# clusters.  The workloads write whole L2 spans (cs / 8 clusters) one
# after another, so that each span allocates its L2 table and then a run
# of cs / 8 data clusters at the end of the file, and these keep
# crossing into ranges with no block yet.
#
# At 64 bits a range is exactly one span: when a run starts on a range
# boundary it fills the range, the block for it lands in the next range,
# outside the range it describes, and its own refcount goes into that
# range's block, which must be on disk before the table entry that
# names the new block (else qemu-img check: "refcount=0 reference=1").
# Each span moves the end of the file by cs / 8 + 2 clusters (data, L2,
# block), so successive runs start at every other phase: with 512-byte
# clusters, 72 spans bring a run onto a boundary from 63 of the 64
# starting phases (measured), and the file, past 2 MiB, also outgrows
# its one-cluster refcount table.
#
# CRASH_SEED=N replays a seed.
. "$abs_top_srcdir/tests/functions.sh"
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
failed=""

for bits in 1 2 4 8 16 32 64; do
    for cs in 512 1024; do
        span=$((cs * cs / 8))           # guest bytes one L2 table maps
        range=$((cs * cs * 8 / bits))   # file bytes one block describes
        prep=""
        if [ "$bits" = 64 ]; then
            # A seeded starting phase: qemu-io writes r clusters (and
            # their L2 table) in the first span; then requests of four
            # spans from the second span on, writes only (FUA marks),
            # so that few states lie between the runs.  With 1 KiB
            # clusters a sweep of the 128 phases would take 16 MiB:
            # 44 spans try a third of them per run.
            r=$((seed % (cs / 8)))
            [ "$r" = 0 ] ||
                prep="qemu-io -f qcow2 -c 'write -P 0x44 0 $((r * cs))'"
            if [ "$cs" = 512 ]; then
                requests=18 size=3M
            else
                requests=11 size=6M
            fi
            states=300 min=250
            args="--seq=1 --seq-start=$span --seq-sectors=$((span / 128))
                  --mix=write:1 --fua=0.1"
        else
            # qemu-io fills all but two or three spans' worth of the
            # first range (a new image ends at 4 KiB; a span takes
            # span + cs bytes of file), after a 2-span window at the
            # start of the disk; then spans are written from there, so
            # that the first new block comes within three spans, then
            # one every 64 / bits spans.  A fifth of the writes are
            # small ones into the window, which allocate a seeded number
            # of clusters: the crossing comes at a seeded phase.
            hot=$((2 * span))
            n=$(((range - 4096) / (span + cs) - 2))
            [ "$n" -gt 0 ] || n=0
            fill=$((n * span))
            [ "$n" = 0 ] ||
                prep="qemu-io -f qcow2 -c 'write -P 0x33 $hot $fill'"
            requests=16 states=160 min=120
            size=$(((hot + fill + 16 * span) / 1024))K
            args="--seq=0.8 --seq-start=$((hot + fill))
                  --seq-sectors=$((span / 512)) --hot=1 --hot-bytes=$hot
                  --big=0 --mix=write:85,flush:15"
        fi
        set --
        for a in $args; do
            set -- "$@" --workload-arg "$a"
        done
        [ -z "$prep" ] || set -- "$@" --prep "$prep \"\$IMG\" >/dev/null"
        echo "refcount_bits=$bits cluster_size=$cs: a block every" \
             "$((range / 1024)) KiB of file"
        sh "$abs_top_srcdir/tests/crash/run-crash.sh" \
            --requests "$requests" --min-states "$min" "$@" \
            qcow2 "$seed" "$states" \
            qemu-img create -q -f qcow2 \
            -o cluster_size=$cs,refcount_bits=$bits IMG "$size" ||
            failed="$failed refcount_bits=$bits,cluster_size=$cs"
    done
done
# Every case runs, so that one failure does not hide another.
[ -z "$failed" ] || fail "crash states broken with:$failed"
