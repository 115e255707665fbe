#!/bin/bash
# fuzz-vhdx (built with gcc and fuzz-main.c) runs over its seed corpus,
# qemu-img's VHDX files turned into piece lists by make-corpus.sh,
# without a finding, and every seed, turned back into a file, opens.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/fuzz/fuzz-functions.sh"
replay_corpus vhdx 7 opens
