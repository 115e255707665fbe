#!/bin/bash
# Quick start: install what is missing, build, run the whole test suite.
# Prints "N passed, N failed" last.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh" || exit 1
"$top/scripts/build.sh" || exit 1
builddir=${BUILDDIR:-$top/build}
cd "$builddir"
make -j2 check "$@" >check.out 2>&1
rc=$?
tail -n 30 check.out
# Automake's summary: a skip counts as a failure (every tool is installed).
get() { sed -n "s/^# $1: *//p" check.out | tail -n 1; }
pass=$(get PASS); fail=$(get FAIL); skip=$(get SKIP)
xfail=$(get XFAIL); xpass=$(get XPASS); error=$(get ERROR)
passed=$(( ${pass:-0} + ${xfail:-0} ))
failed=$(( ${fail:-0} + ${skip:-0} + ${xpass:-0} + ${error:-0} ))
if [ $rc -ne 0 ] && [ $failed -eq 0 ]; then
    failed=1
fi
if [ $failed -gt 0 ]; then
    for f in $(find . -name '*.trs' | xargs grep -l -E ':test-result: (FAIL|SKIP|ERROR|XPASS)'); do
        echo "--- ${f%.trs}.log"
        tail -n 40 "${f%.trs}.log"
    done
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
