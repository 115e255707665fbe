#!/bin/sh
# Claim: when a write must copy an L2 table shared with an internal
# snapshot (L1 entry without COPIED) and adding the copy to the set of
# metadata clusters fails with ENOMEM (DISKSERVE_FAULT=META_SET), the
# write fails alone and the shared table keeps its count: retried, the
# write copies the table again and succeeds.  After a flush and a clean
# stop, qemu-img check finds no error and no leak (the cluster taken
# for each failed copy was given back), the snapshot reads what it held
# and the active layer reads every acknowledged write.  (The old table's free was once queued before the step that
# failed, so each failed copy dropped a reference the snapshot's L1
# still held.)
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img qemu-io /usr/bin/python3

# open_meta_sets IMAGE: how many META_SET operations opening IMAGE
# read-write takes (today one per refcount block and per active L2
# table).  Fails the Nth until an open gets past it: a --stdio server
# between two pipes, the first empty, opens the image, finds no client
# and exits 0 (its greeting, less NULs, lands in out before its exit
# status).
open_meta_sets()
{
    local n=1 out
    while [ $n -le 64 ]; do
        out=$( (true | DISKSERVE_FAULT="META_SET:$n:ENOMEM" \
                    "$DISKSERVE" --stdio "$1" 2>"$T/probe.err" &&
                echo " exit=0" || echo " exit=$?") | tr -d '\000')
        if [ "${out##* exit=}" = 0 ] &&
           ! grep -q injected "$T/probe.err"; then
            echo $((n - 1))
            return 0
        fi
        grep -q 'injected.*META_SET' "$T/probe.err" || {
            cat "$T/probe.err" >&2
            fail "diskserve did not take DISKSERVE_FAULT=META_SET:$n"
        }
        n=$((n + 1))
    done
    fail "opening $1 takes more than 64 META_SET operations"
}

# run_writes URI SHADOW "OFFSET LENGTH"...: write each range, retrying a
# failed write up to 3 times; what was acknowledged goes to SHADOW.
# Then flush.  Prints each failure; fails if a write never succeeds.
run_writes()
{
    /usr/bin/python3 - "$@" <<'EOF'
import struct
import sys
import nbd

uri, shadow = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.connect_uri(uri)
with open(shadow, "r+b") as f:
    for spec in sys.argv[3:]:
        off, n = (int(x, 0) for x in spec.split())
        # Every 8 bytes name the write's offset: misplaced data shows.
        data = struct.pack(">Q", off ^ 0xd15c5e7) * (n // 8)
        for attempt in range(1, 5):
            try:
                h.pwrite(data, off)
            except nbd.Error as e:
                print("write %s, attempt %d: %s" % (spec, attempt, e))
                continue
            f.seek(off)
            f.write(data)
            break
        else:
            sys.exit("FAIL: write %s never succeeded" % spec)
h.flush()
h.shutdown()
EOF
}

# try CLUSTER_SIZE FAULTS "OFFSET LENGTH"...: an image whose data is
# all shared with snapshot "snap", written through a server whose
# FAULTS META_SET operations after the open fail with ENOMEM, then
# judged.
try()
{
    local cs="$1" faults="$2"
    shift 2
    local img="$T/$cs.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size="$cs" "$img" 16M
    qemu-io -f qcow2 -c "write -P 0x5a 0 2M" -c "write -P 0x11 8M 1M" \
        "$img" >/dev/null
    qemu-img snapshot -c snap "$img"
    qemu-img convert -l snap -f qcow2 -O raw "$img" "$T/$cs.snap"
    cp "$T/$cs.snap" "$T/$cs.shadow"

    local k spec="" i
    k=$(open_meta_sets "$img")
    for i in $(seq "$faults"); do
        spec="$spec${spec:+,}META_SET:$((k + i)):ENOMEM"
    done
    echo "$cs: the open takes $k META_SET operations; faults: $spec"
    export DISKSERVE_FAULT="$spec"
    ds_start "ds-$cs" "$img"
    unset DISKSERVE_FAULT
    run_writes "$DS_URI" "$T/$cs.shadow" "$@" ||
        fail "$cs: writes (log: $(tail -3 "$T/ds-$cs.log"))"
    ds_stop "$DS_PID" || fail "$cs: diskserve exited with an error"
    # The test is void unless the faults met the copies of shared tables.
    [ "$(grep -c 'injected.*META_SET' "$T/ds-$cs.log")" = "$faults" ] || {
        cat "$T/ds-$cs.log" >&2
        fail "$cs: the writes did not meet $faults META_SET faults"
    }

    # No leak either: the cluster taken for a copy that failed is given
    # back and freed.
    qemu-img check "$img" >"$T/$cs.chk" 2>&1 || {
        cat "$T/$cs.chk" >&2
        fail "$cs: qemu-img check: errors or leaked clusters"
    }
    qemu-img convert -l snap -f qcow2 -O raw "$img" "$T/$cs.snap.after"
    cmp -s "$T/$cs.snap" "$T/$cs.snap.after" ||
        fail "$cs: snapshot snap no longer reads what it held"
    qemu-img compare -f qcow2 -F raw "$img" "$T/$cs.shadow" ||
        fail "$cs: the active layer does not read the acknowledged writes"
    echo "ok: $cs"
}

# 64 KiB clusters: one L2 table maps the whole disk.  The first write
# (into a cluster the snapshot holds) fails once, then goes through.
try 64k 1 "0x10200 8192" "0x100000 0x10000" "0x819000 4096" \
    "0xc00000 0x10000"
# 4 KiB clusters: an L2 table per 2 MiB.  The first write fails twice;
# then one more shared table (at 8 MiB) and a new one (12 MiB) follow.
try 4k 2 "0x1200 8192" "0x100000 0x10000" "0x819000 4096" \
    "0xc00000 0x10000"
