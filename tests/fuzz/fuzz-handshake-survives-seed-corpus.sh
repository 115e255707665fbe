#!/bin/bash
# fuzz-handshake (built with gcc and fuzz-main.c) runs over its seed
# corpus, the client byte streams make-corpus.sh records, without a
# finding.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/fuzz/fuzz-functions.sh"
replay_corpus handshake 10
