#!/bin/bash
# Quick start: install what is missing, build, run the whole test suite.
# With SANITIZERS=1 (CI sets it) the fast suites run a second time in an
# ASan+UBSan build, and with FUZZ_SMOKE=1 (CI sets it too) every fuzz
# target runs for a minute under libFuzzer (make fuzz-smoke), each
# counted as a test.  Prints "N passed, N failed" last; a skipped test
# counts as failed, since every tool is installed.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh" || exit 1
"$top/scripts/build.sh" || exit 1
builddir=${BUILDDIR:-$top/build}
cd "$builddir"

passed=0
failed=0
# count OUT: add automake's summary in OUT to the totals.
count()
{
    local get pass fail skip xfail xpass error
    get() { sed -n "s/^# $1: *//p" "$2" | tail -n 1; }
    pass=$(get PASS "$1"); fail=$(get FAIL "$1"); skip=$(get SKIP "$1")
    xfail=$(get XFAIL "$1"); xpass=$(get XPASS "$1"); error=$(get ERROR "$1")
    passed=$(( passed + ${pass:-0} + ${xfail:-0} ))
    failed=$(( failed + ${fail:-0} + ${skip:-0} + ${xpass:-0} + ${error:-0} ))
}
# show_failures DIR: the tail of every failed test's log.
show_failures()
{
    find "$1" -name '*.trs' -print0 |
        xargs -0 -r grep -l -E ':test-result: (FAIL|SKIP|ERROR|XPASS)' |
        while read -r f; do
            echo "--- ${f%.trs}.log"
            tail -n 40 "${f%.trs}.log"
        done
}

make -j2 check "$@" >check.out 2>&1
rc=$?
tail -n 12 check.out
before=$failed
count check.out
if [ $rc -ne 0 ] && [ $failed -eq $before ]; then
    failed=$((failed + 1))      # make failed outside any test
fi
show_failures tests

if [ "${SANITIZERS:-0}" = 1 ]; then
    fast=$(cd "$top" && ls tests/unit/*.c tests/integration/*.c \
               tests/protocol/*.py tests/interop/*.sh tests/server/*.sh \
               tests/fuzz/*-survives-seed-corpus.sh \
               2>/dev/null | grep -v -e harness -e nbdraw -e test-qcow2-crypto |
           sed 's/\.c$//' | tr '\n' ' ')
    make check-sanitizers TESTS="$fast" >check-sanitizers.out 2>&1
    rc=$?
    echo "sanitizer build:"
    tail -n 12 check-sanitizers.out
    before=$failed
    count check-sanitizers.out
    if [ $rc -ne 0 ] && [ $failed -eq $before ]; then
        failed=$((failed + 1))
    fi
    show_failures sanitizers/tests
fi

if [ "${FUZZ_SMOKE:-0}" = 1 ]; then
    make fuzz-smoke >fuzz-smoke.out 2>&1
    rc=$?
    grep -E '^(fuzz-smoke:|#[0-9]+[[:space:]]+DONE)' fuzz-smoke.out
    p=$(grep -c '^fuzz-smoke: .*: PASS$' fuzz-smoke.out)
    f=$(grep -c '^fuzz-smoke: .*: FAIL$' fuzz-smoke.out)
    passed=$((passed + p))
    failed=$((failed + f))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        tail -n 40 fuzz-smoke.out
        failed=$((failed + 1))  # the fuzz build failed
    fi
fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
