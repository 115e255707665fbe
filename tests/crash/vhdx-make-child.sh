#!/bin/sh
# vhdx-make-child.sh IMG SEED: a differencing VHDX file IMG over a
# qemu-made dynamic parent base.vhdx beside it (4 MiB, 1 MiB blocks, data
# in every block), with blocks PARTIALLY_PRESENT, NOT_PRESENT and
# FULLY_PRESENT (tests/vhdx/vhdxdiff.py), for the crash tests.
set -eu
img=$1 seed=$2
dir=$(dirname "$img")
/usr/bin/python3 -c '
import random, sys
with open(sys.argv[2], "wb") as f:
    f.write(random.Random(int(sys.argv[1])).randbytes(4 << 20))
' "$seed" "$dir/base.raw"
qemu-img convert -q -f raw -O vhdx -o subformat=dynamic,block_size=1M \
    "$dir/base.raw" "$dir/base.vhdx"
/usr/bin/python3 "$abs_top_srcdir/tests/vhdx/vhdxdiff.py" "$img" \
    "$dir/base.vhdx" base.vhdx "$seed" PNFN "$dir/base.raw" "$dir/child.raw"
rm -f "$dir/base.raw" "$dir/child.raw"
