#!/bin/bash
# fuzz-qcow2-check (built with gcc and fuzz-main.c) runs over its seed
# corpus (the qcow2-open images, as make-corpus.sh makes them) without a
# finding.
. "$abs_top_srcdir/tests/functions.sh"
corpus=$abs_top_builddir/tests/fuzz/corpus-qcow2-check
rc=0
bash "$abs_top_srcdir/tests/fuzz/make-corpus.sh" qcow2-check "$corpus" || rc=$?
[ $rc -eq 0 ] || exit $rc
ls "$corpus" | grep -q . || fail "empty corpus $corpus"
TMPDIR=$T "$abs_top_builddir/tests/fuzz/fuzz-qcow2-check" "$corpus" 2>$T/log ||
    { tail -n 40 $T/log; fail "fuzz-qcow2-check failed on its corpus"; }
tail -n 1 $T/log
