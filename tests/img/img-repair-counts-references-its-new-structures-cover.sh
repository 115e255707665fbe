#!/bin/sh
# Claim: when a rebuild of the refcount structures has to place them past
# clusters that references past the end of the file name, the file then
# holds those clusters (as zeros) and check -r all counts them too: the
# repaired image is clean for qemu-img check and for our own second
# check.  (A fuzzed image found the repair reporting success while the
# next check found those clusters with refcount 0; qemu-img's own repair
# leaves errors on the same file.)
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"

f="$T/cut.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=4k "$f" 1M
qemu-io -c "write -P 7 0 16k" "$f" >/dev/null
# Header, refcount table, block, L1, L2, then four data clusters at
# 0x5000..0x8fff: cut the file after the first.
[ "$(stat -c %s "$f")" = $((0x9000)) ] || fail "unexpected qemu-img layout"
truncate -s $((0x6000)) "$f"
rt=$($POKE "$f" reftable 1)
$POKE "$f" reftable 1 $((rt | 0x100)) >/dev/null

rc=0
"$DISKSERVE_IMG" check -r all "$f" >"$T/out" 2>"$T/err" || rc=$?
[ $rc = 0 ] || { cat "$T/out" "$T/err" >&2; fail "check -r all exit $rc"; }
grep -q "^No errors were found" "$T/out" ||
    { cat "$T/out" >&2; fail "the repair's own second check found errors"; }
qemu-img check "$f" >"$T/q" 2>&1 ||
    { cat "$T/q" "$T/err" >&2; fail "qemu-img check of the repaired file"; }
"$DISKSERVE_IMG" check "$f" >"$T/again" 2>&1 ||
    { cat "$T/again" >&2; fail "our check of the repaired file"; }
qemu-io -c "read -P 7 0 4k" -c "read -P 0 4k 12k" "$f" >/dev/null ||
    fail "data: the cluster in the file or the zeros past it changed"
echo OK
