#!/bin/bash
# fuzz-handshake (built with gcc and fuzz-main.c) runs over its seed corpus,
# as make-corpus.sh makes it, without a finding.
. "$abs_top_srcdir/tests/functions.sh"
corpus=$abs_top_builddir/tests/fuzz/corpus-handshake
rc=0
bash "$abs_top_srcdir/tests/fuzz/make-corpus.sh" handshake "$corpus" || rc=$?
[ $rc -eq 0 ] || exit $rc
ls "$corpus" | grep -q . || fail "empty corpus $corpus"
TMPDIR=$T "$abs_top_builddir/tests/fuzz/fuzz-handshake" "$corpus" 2>$T/log ||
    { tail -n 40 $T/log; fail "fuzz-handshake failed on its corpus"; }
tail -n 1 $T/log
