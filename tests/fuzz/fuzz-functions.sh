# Helpers of the seed corpus tests, sourced after tests/functions.sh.

# replay_corpus TARGET MIN_SEEDS [opens]: make TARGET's seed corpus
# afresh with make-corpus.sh, fail unless it holds MIN_SEEDS inputs or
# more, and replay it with the gcc build of fuzz-TARGET (a finding
# aborts it).  With "opens", every seed must also say that it opened
# (FUZZ_REPORT_OPENS), so that the corpus reaches past the parser's first
# refusal.
replay_corpus()
{
    local t=$1 min=$2 opens=${3:-} n opened
    local corpus="$abs_top_builddir/tests/fuzz/corpus-$t"
    rm -rf "$corpus"
    bash "$abs_top_srcdir/tests/fuzz/make-corpus.sh" "$t" "$corpus" ||
        fail "make-corpus.sh $t failed"
    n=$(ls "$corpus" | wc -l)
    [ "$n" -ge "$min" ] || fail "only $n seeds in $corpus"
    FUZZ_REPORT_OPENS=1 TMPDIR=$T "$abs_top_builddir/tests/fuzz/fuzz-$t" \
        "$corpus" 2>"$T/log" ||
        { tail -n 40 "$T/log"; fail "fuzz-$t failed on its corpus"; }
    if [ -n "$opens" ]; then
        opened=$(grep -c "^fuzz-$t: opened" "$T/log")
        [ "$opened" -eq "$n" ] ||
            { cat "$T/log"; fail "$opened of $n seeds opened"; }
    fi
    tail -n 1 "$T/log"
}
