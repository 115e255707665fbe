#!/bin/bash
# Quick start: install what is missing, build, create a demo qcow2 image
# and serve it.  Prints the URI to connect to; Ctrl-C stops the server.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
"$top/scripts/build.sh"
demo=${DEMO_DIR:-$top/build/demo}
mkdir -p "$demo"
img="$demo/demo.qcow2"
if [ ! -f "$img" ]; then
    qemu-img create -q -f qcow2 "$img" 1G
    qemu-io -f qcow2 -c 'write -P 0x44 0 1M' -c 'write -z 1M 1M' "$img" >/dev/null
fi
sock="$demo/diskserve.sock"
echo "serving $img"
echo "connect with:  nbdinfo 'nbd+unix:///?socket=$sock'"
echo "           or  nbd://localhost:10809  (TCP)"
echo "URI: nbd+unix:///?socket=$sock"
exec "$top/build/diskserve" -k "$sock" -p 10809 "$img"
