#!/bin/bash
# fuzz-requests (built with gcc and fuzz-main.c) runs over its seed
# corpus (request streams from make-requests-corpus.py for every image
# kind and header size) without a finding.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/fuzz/fuzz-functions.sh"
replay_corpus requests 8
