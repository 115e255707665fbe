#!/bin/sh
# Injected EIO and ENOSPC (DISKSERVE_FAULT) on raw data writes and on
# flush syncs: the request that hits one gets the error, the file is not
# touched, the server keeps serving that client and others, and after a
# failed sync every write is refused with EIO while reads go on.
. "$abs_top_srcdir/tests/functions.sh"
require python3
python3 "$abs_top_srcdir/tests/crash/faults.py" "$DISKSERVE" "$T" \
    "$abs_top_builddir/tests/crash/crash-replay"
