#!/bin/sh
# Claim: EIO and ENOSPC injected (DISKSERVE_FAULT) at each metadata step
# of the qcow2 write path (L1 and L2 updates, refcount blocks and table,
# file growth, refcount table growth, the flush sync) fail the request
# that meets them with that error or EIO, and nothing else: the server
# keeps serving that connection and others, every flushed write reads
# back, and after the server stops qemu-img check exits 0 or 3 and qemu
# reads every flushed write.  The cases: qcow2w-faults.py.  QW_SEED=N
# replays a run.
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img qemu-io /usr/bin/python3
seed=${QW_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed (replay: QW_SEED=$seed)"
/usr/bin/python3 "$abs_top_srcdir/tests/qcow2w/qcow2w-faults.py" \
    "$DISKSERVE" "$T" "$seed"
