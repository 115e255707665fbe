#!/bin/bash
# Claim: dirty bitmaps (qemu:dirty-bitmap:NAME) read over TLS, with
# certificates and with a PSK, report exactly what the same server
# reports in the clear and what qemu-img reads over TLS with
# x-dirty-bitmap; a write made over TLS shows up dirty in an enabled
# bitmap.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/bitmaps-server/bitmap-functions.sh"
. "$abs_top_srcdir/tests/tls/tls-functions.sh"
require nbdinfo nbdsh qemu-img

make_pki
mkdir "$T/psk"
make_psk "$T/psk/keys.psk" alice
img=$T/disk.qcow2
make_bitmap_image "$img"

ds_start plain -r "$img"
plain_sock=$DS_SOCK plain_pid=$DS_PID
ds_start tls --tls=require --tls-certificates "$T/pki/server" \
    --tls-psk "$T/psk/keys.psk" "$img"
x509="nbds+unix:///?socket=$DS_SOCK&tls-certificates=$T/pki/client"
psk="nbds+unix://alice@/?socket=$DS_SOCK&tls-psk-file=$T/psk/keys.psk"

for bm in fine mid coarse; do
    nbdinfo --map="qemu:dirty-bitmap:$bm" "nbd+unix:///?socket=$plain_sock" |
        dirty_runs >"$T/plain.$bm"
    [ -s "$T/plain.$bm" ] || fail "$bm: no dirty run in the clear"
    nbdinfo --map="qemu:dirty-bitmap:$bm" "$x509" | dirty_runs >"$T/x509.$bm"
    cmp "$T/plain.$bm" "$T/x509.$bm" || fail "$bm: x509 map differs"
    nbdinfo --map="qemu:dirty-bitmap:$bm" "$psk" | dirty_runs >"$T/psk.$bm"
    cmp "$T/plain.$bm" "$T/psk.$bm" || fail "$bm: PSK map differs"
    qemu-img map --output=json \
        --object "tls-creds-x509,id=tls0,endpoint=client,dir=$T/pki/client" \
        --image-opts "driver=nbd,server.type=unix,server.path=$DS_SOCK,tls-creds=tls0,tls-hostname=localhost,x-dirty-bitmap=qemu:dirty-bitmap:$bm" |
        qemu_map_dirty_runs >"$T/qemu.$bm"
    cmp "$T/plain.$bm" "$T/qemu.$bm" || fail "$bm: qemu-img's map differs"
done

ds_stop "$plain_pid" || fail "plain server exit status"

# 150 MiB is clean in "fine" until a write over TLS.
grep -q "^157286400 " "$T/plain.fine" && fail "150 MiB dirty already"
URI=$x509 nbdsh -c '
import os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
h.pwrite(b"t" * 4096, 150 << 20)
h.flush()
h.shutdown()
' || fail "write over TLS"
nbdinfo --map=qemu:dirty-bitmap:fine "$x509" | dirty_runs >"$T/after"
grep -q "^157286400 4096$" "$T/after" || fail "TLS write not dirty: $(cat "$T/after")"
ds_stop "$DS_PID" || fail "server exit status"
echo PASS
