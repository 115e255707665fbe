#!/bin/bash
# Side-by-side benchmark of diskserve, nbdkit and qemu-nbd.
#
# The work is done by side_by_side.py next to this script; this wrapper only
# picks Debian's python3 so that the benchmark does not depend on whatever
# python the caller's PATH finds first.  Usage: bench/run.sh --help, and
# bench/README.md for how to read the results.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || exit 1
py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec "$py" "$here/side_by_side.py" "$@"
