#!/bin/sh
# smoke-one.sh TARGET:DICT SRCDIR FLAGS...: one target of `make
# fuzz-smoke`, run from the build directory: its seed corpus generated
# into fuzz/corpus-TARGET, then libFuzzer with FLAGS and
# SRCDIR/tests/fuzz/DICT.dict.  Prints libFuzzer's DONE line and
# "fuzz-smoke: fuzz-TARGET: PASS", or the log's tail and "...: FAIL"
# (exit 1), all at once, so that targets run side by side do not mix
# their lines.
td=$1 srcdir=$2
shift 2
t=${td%%:*}
d=$srcdir/tests/fuzz/${td#*:}.dict
if sh "$srcdir/tests/fuzz/make-corpus.sh" "$t" "fuzz/corpus-$t" &&
   "fuzz/fuzz-$t" "$@" -dict="$d" -artifact_prefix=fuzz/ \
       "fuzz/corpus-$t" 2>"fuzz/fuzz-$t.log"; then
    out=$(grep -E '^#[0-9]+[[:space:]]+DONE' "fuzz/fuzz-$t.log" | tail -n 1)
    printf '%s\nfuzz-smoke: fuzz-%s: PASS\n' "$out" "$t"
    exit 0
fi
out=$(tail -n 60 "fuzz/fuzz-$t.log" 2>/dev/null)
printf '%s\nfuzz-smoke: fuzz-%s: FAIL\n' "$out" "$t"
exit 1
