#!/bin/sh
# The qcow2 crash tests can tell a wrong write order: with each rule of
# qcow2.c's write order broken on purpose (DISKSERVE_QCOW2_BREAK=RULE:
# refcount-before-l2, l2-before-refcount, data-before-mapping,
# l2-before-l1), the allocation workload on 512-byte clusters must yield
# crash states that crash-check rejects, and some of them must be broken
# as found (qemu-img check before opening, or a sector read back), not
# only after the checker's own writes.  CRASH_SEED=N replays a seed.
. "$abs_top_srcdir/tests/functions.sh"
seed=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "seed $seed"
for rule in refcount-before-l2 l2-before-refcount data-before-mapping \
    l2-before-l1; do
    sh "$abs_top_srcdir/tests/crash/run-crash.sh" --requests 200 \
        --server-env DISKSERVE_QCOW2_BREAK=$rule --expect-failure \
        --workload-arg --hot=0.3 \
        qcow2 "$seed" 250 \
        qemu-img create -q -f qcow2 -o cluster_size=512 IMG 1M \
        >"$T/$rule.out" 2>&1 || {
        grep -v '^ *| ' "$T/$rule.out" | tail -n 20 >&2
        fail "$rule: the broken order went unnoticed"
    }
    grep '^FAIL k=' "$T/$rule.out" | grep -qv 'after writing' || {
        grep -v '^ *| ' "$T/$rule.out" | tail -n 20 >&2
        fail "$rule: no crash state was broken before the checker wrote"
    }
    echo "$rule: $(grep -c '^FAIL k=' "$T/$rule.out") broken states" \
        "reported; $(sed -n 's/^crash-check: \([0-9]* states checked\).*/\1/p' \
        "$T/$rule.out")"
done
