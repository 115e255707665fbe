# Helper of the broken-write-order tests, sourced after tests/functions.sh.

# caught RULE SEED RUN-CRASH-ARGS...: run run-crash.sh with
# --expect-failure and RULE broken through its environment argument
# (part of RUN-CRASH-ARGS, with the literal word SEED standing for the
# seed), on SEED and, while the checker reports nothing, on SEED+1 and
# SEED+2: whether a sample of a few hundred crash states holds a broken
# one depends on how the workload's requests happened to overlap, so one
# seed in a few finds none.  Fails unless some seed gave a state broken
# before the checker wrote; leaves that run's output in $T/RULE.out.
caught()
{
    local rule=$1 seed=$2 s a
    shift 2
    for s in $seed $((seed + 1)) $((seed + 2)); do
        local args=
        for a in "$@"; do
            [ "$a" = SEED ] && a=$s
            args="$args '$a'"
        done
        if eval sh "\"$abs_top_srcdir/tests/crash/run-crash.sh\"" \
               --expect-failure $args >"$T/$rule.out" 2>&1 &&
           grep '^FAIL k=' "$T/$rule.out" | grep -qv 'after writing'; then
            checked=$(sed -n 's/^crash-check: \([0-9]* states checked\).*/\1/p' \
                      "$T/$rule.out")
            echo "$rule: seed $s: $(grep -c '^FAIL k=' "$T/$rule.out")" \
                 "broken states reported; $checked"
            return 0
        fi
        echo "$rule: seed $s: nothing broken before the checker wrote"
    done
    grep -v '^ *| ' "$T/$rule.out" | grep -v '^vhdx:' | tail -n 20 >&2
    fail "$rule: the broken order went unnoticed with seeds $seed to $((seed + 2))"
}
