#!/bin/bash
# A libnbd backup agent (backup-agent.c) takes a full backup with a
# checkpoint bitmap started through the control socket, then three
# incremental rounds, each rotating checkpoints with one QMP transaction
# while a second connection writes, zeroes and trims, and copying only
# the extents the previous checkpoint marks dirty.  Each round's backup
# differs from the export only where the new checkpoint is dirty; the
# last, with no writer, equals it, and qemu-img compare agrees after the
# server stops.
. "$abs_top_srcdir/tests/functions.sh"

seed=${SEED:-$(date +%s)}
echo "seed $seed (SEED=$seed to replay)"
img=$T/disk.qcow2
qemu-img create -q -f qcow2 "$img" 128M
qemu-io -f qcow2 -c "write -P 17 0 8m" -c "write -P 18 60m 3m" "$img" \
    >/dev/null

ds_start ds -f qcow2 -x disk --control "$T/ctl.sock" "$img"
"$abs_top_builddir/tests/bitmaps-server/backup-agent" \
    "nbd+unix:///disk?socket=$DS_SOCK" "$T/ctl.sock" disk \
    "$T/backup.raw" "$seed" ||
    fail "backup agent failed; server log: $(tail -5 "$T/ds.log")"
ds_stop "$DS_PID" || fail "server exit status $?"
qemu-img compare -q -f raw -F qcow2 "$T/backup.raw" "$img" ||
    fail "backup differs from the image"
qemu-img check -q "$img" || fail "qemu-img check failed"
