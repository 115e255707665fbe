#!/bin/bash
# fuzz-vhdx (built with gcc and fuzz-main.c) runs over its seed corpus, as
# make-corpus.sh makes it from qemu-img's VHDX files, without a finding,
# and every seed, turned into a piece list and back, opens.
. "$abs_top_srcdir/tests/functions.sh"
corpus=$abs_top_builddir/tests/fuzz/corpus-vhdx
rm -rf "$corpus"
bash "$abs_top_srcdir/tests/fuzz/make-corpus.sh" vhdx "$corpus" ||
    fail "make-corpus.sh vhdx failed"
n=$(ls "$corpus" | wc -l)
[ "$n" -ge 7 ] || fail "only $n seeds in $corpus"
FUZZ_REPORT_OPENS=1 TMPDIR=$T "$abs_top_builddir/tests/fuzz/fuzz-vhdx" \
    "$corpus" 2>$T/log ||
    { tail -n 40 $T/log; fail "fuzz-vhdx failed on its corpus"; }
opened=$(grep -c '^fuzz-vhdx: opened' $T/log)
[ "$opened" -eq "$n" ] ||
    { cat $T/log; fail "$opened of $n seeds opened"; }
tail -n 1 $T/log
