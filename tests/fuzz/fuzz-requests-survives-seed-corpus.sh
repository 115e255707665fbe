#!/bin/bash
# fuzz-requests (built with gcc and fuzz-main.c) runs over its seed
# corpus (request streams from make-requests-corpus.py for every image
# kind and header size) without a finding.
. "$abs_top_srcdir/tests/functions.sh"
corpus=$abs_top_builddir/tests/fuzz/corpus-requests
rc=0
bash "$abs_top_srcdir/tests/fuzz/make-corpus.sh" requests "$corpus" || rc=$?
[ $rc -eq 0 ] || exit $rc
ls "$corpus" | grep -q . || fail "empty corpus $corpus"
TMPDIR=$T "$abs_top_builddir/tests/fuzz/fuzz-requests" "$corpus" 2>$T/log ||
    { tail -n 40 $T/log; fail "fuzz-requests failed on its corpus"; }
tail -n 1 $T/log
