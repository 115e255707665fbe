#!/bin/sh
# Claim: check -r all drops references past the end of the file only in
# tables that lie in the file past the header cluster: an image whose L1
# entry holds only the COPIED flag (it names an L2 table at offset 0,
# whose "entries" are then the header's own fields, pointing far past
# the end) keeps its header byte for byte, so the file is still a qcow2
# image for qemu-img.  (A fuzzed image whose snapshot L1 table sat at 0
# once had its magic overwritten.)
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"
QPOKE="/usr/bin/python3 $abs_top_srcdir/tests/qcow2/qcow2poke.py"

f="$T/l2-at-0.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=4k "$f" 1M
qemu-io -c "write -P 7 0 16k" "$f" >/dev/null
l1=$($QPOKE get "$f" 40 '>Q')
$QPOKE set "$f" "$l1" '>Q' 0x8000000000000000
head -c 4096 "$f" >"$T/header.before"
"$DISKSERVE_IMG" check -r all "$f" >"$T/out" 2>"$T/err" || true
head -c 4096 "$f" >"$T/header.after"
cmp -s "$T/header.before" "$T/header.after" ||
    { cat "$T/err" >&2; fail "the repair wrote into the header cluster"; }
qemu-img info -f qcow2 "$f" >/dev/null ||
    fail "qemu-img no longer reads the repaired file as qcow2"
echo OK
