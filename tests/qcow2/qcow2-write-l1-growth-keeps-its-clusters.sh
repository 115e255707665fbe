#!/bin/sh
# Claim: the clusters a growing L1 table takes at the frontier are never
# handed out again before they are counted, even when counting them
# creates a refcount block while the free-cluster scan still runs below
# them (qcow2-l1-growth-at-range-start sets that up): the block lands
# outside the new table, qemu-img check finds no error and qemu reads
# back every write.
. "$abs_top_srcdir/tests/functions.sh"
require qemu-img qemu-io

img="$T/l1.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 "$img" 1M
qemu-io -f qcow2 -c "write -P 0x11 0 64k" "$img" >/dev/null
"$abs_top_builddir/tests/qcow2/qcow2-l1-growth-at-range-start" "$img" \
    >"$T/out" 2>&1 || { cat "$T/out" >&2; fail "driver"; }
cat "$T/out"
qemu-img check "$img" >"$T/check" 2>&1 || {
    cat "$T/check" >&2
    fail "qemu-img check"
}
end=$(sed -n 's/^phase one: wrote up to \(0x[0-9a-f]*\),.*/\1/p' "$T/out")
[ -n "$end" ] || fail "no phase one line"
end=$((end))
qemu-io -f qcow2 -c "read -P 0x6b 0 512" -c "read -P 0x11 512 63k" \
    -c "read -P 0x5a 64k $((end - 65536))" -c "read -P 0x7c $end 512" \
    -c "read -P 0 $((end + 512)) $((1048576 - end - 512))" \
    "$img" >"$T/read" 2>&1 || { cat "$T/read" >&2; fail "contents"; }
echo "ok: L1 table grew beside a new refcount block"
