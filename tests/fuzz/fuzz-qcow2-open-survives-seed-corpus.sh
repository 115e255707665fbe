#!/bin/bash
# fuzz-qcow2-open (built with gcc and fuzz-main.c) runs over its seed
# corpus, qemu-img's images of every create option as make-corpus.sh
# makes them, without a finding.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/fuzz/fuzz-functions.sh"
replay_corpus qcow2-open 20
