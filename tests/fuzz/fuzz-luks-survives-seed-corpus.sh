#!/bin/bash
# fuzz-luks (built with gcc and fuzz-main.c) runs over its seed corpus,
# LUKS1 headers qemu-img made with several ciphers and hashes, without a
# finding, and every seed opens with its passphrase (so the round trip
# of encryption is exercised for each).
. "$abs_top_srcdir/tests/functions.sh"
corpus=$abs_top_builddir/tests/fuzz/corpus-luks
rm -rf "$corpus"
bash "$abs_top_srcdir/tests/fuzz/make-corpus.sh" luks "$corpus" ||
    fail "make-corpus.sh luks failed"
n=$(ls "$corpus" | wc -l)
[ "$n" -ge 6 ] || fail "only $n seeds in $corpus"
FUZZ_REPORT_OPENS=1 TMPDIR=$T "$abs_top_builddir/tests/fuzz/fuzz-luks" \
    "$corpus" 2>$T/log ||
    { tail -n 40 $T/log; fail "fuzz-luks failed on its corpus"; }
opened=$(grep -c '^fuzz-luks: opened' $T/log)
[ "$opened" -eq "$n" ] ||
    { cat $T/log; fail "$opened of $n seeds opened"; }
tail -n 1 $T/log
