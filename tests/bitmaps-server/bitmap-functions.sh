# Helpers for the dirty bitmap tests; source after tests/functions.sh.

# The image size of make_bitmap_image: 256 MiB and three sectors, so the
# last granule of the 64 KiB and 1 MiB bitmaps is partial.
BM_SIZE=$((256 * 1024 * 1024 + 3 * 512))

# make_bitmap_image PATH: a qcow2 image with three persistent bitmaps
# made by qemu-img, with data written by qemu-io between the adds:
#   fine    granularity 512 B, enabled
#   mid     granularity 64 KiB, enabled
#   coarse  granularity 1 MiB, disabled after some writes
# Data written before a bitmap exists is not in it; writes after
# "coarse" is disabled are in fine and mid only.
make_bitmap_image()
{
    local img=$1
    qemu-img create -q -f qcow2 "$img" "$BM_SIZE"
    qio() { qemu-io -f qcow2 "$@" "$img" >/dev/null; }
    qio -c "write -P 1 0 192k" -c "write -P 1 100M 1M"
    qemu-img bitmap --add -g 512 "$img" fine
    qio -c "write -P 2 1m 1000" -c "write -P 2 3m 512" \
        -c "write -P 2 4194816 1536" -c "write -z 10m 70k"
    qemu-img bitmap --add -g 64K "$img" mid
    qio -c "write -P 3 20m 4k" -c "write -P 3 21m 65537" \
        -c "discard 100m 128k" -c "write -P 3 $((BM_SIZE - 512)) 512"
    qemu-img bitmap --add -g 1M "$img" coarse
    qio -c "write -P 4 30m 1" -c "write -P 4 40m 2m" \
        -c "write -P 4 $((BM_SIZE - 1536)) 512"
    qemu-img bitmap --disable "$img" coarse
    qio -c "write -P 5 50m 64k" -c "write -P 5 200m 3m"
}

# dirty_runs: nbdinfo --map lines on stdin to "start length" of the
# dirty ones, adjacent runs merged.
dirty_runs()
{
    awk '$3 == 1 { if (have && s + l == $1) { l += $2; next }
                   if (have) print s, l; s = $1; l = $2; have = 1 }
         END { if (have) print s, l }'
}

# qemu_map_dirty_runs: qemu-img map --output=json under x-dirty-bitmap on
# stdin (dirty reads as "data": false) to merged "start length" runs.
qemu_map_dirty_runs()
{
    /usr/bin/python3 -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    if e["data"]:
        continue
    if runs and runs[-1][0] + runs[-1][1] == e["start"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["start"], e["length"]])
for s, l in runs:
    print(s, l)
'
}
