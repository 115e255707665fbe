#!/bin/bash
# fuzz-luks (built with gcc and fuzz-main.c) runs over its seed corpus,
# LUKS1 headers qemu-img made with several ciphers and hashes, without a
# finding, and every seed opens with its passphrase (so the round trip
# of encryption is exercised for each).
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/fuzz/fuzz-functions.sh"
replay_corpus luks 6 opens
