#!/bin/bash
# fuzz-qcow2-check (built with gcc and fuzz-main.c) runs over its seed
# corpus (the qcow2-open images) without a finding.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/fuzz/fuzz-functions.sh"
replay_corpus qcow2-check 20
