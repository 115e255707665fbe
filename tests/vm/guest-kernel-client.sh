# Guest half of vm-kernel-client-reads-and-writes.sh, run by the root
# filesystem's /init.  Attaches the data export with Linux's own NBD client
# (nbd-client negotiates in user space, the kernel's nbd driver then does
# the I/O), checks what it reads against the sums the host computed, writes
# the seeded pattern once with O_DIRECT and once through the page cache
# followed by fsync (which the kernel turns into NBD_CMD_FLUSH), reads both
# back, and disconnects.  The host then checks the image byte for byte.
#
# Parameters (kernel command line, see root-init.sh): DS_SERVER, DS_PORT,
# DS_EXPORT, DS_SIZE, DS_SUM_1M, DS_SUM_ALL, DS_SEED, and the byte ranges
# DS_DIRECT_OFF/DS_DIRECT_LEN (4096-aligned) and
# DS_BUFFERED_OFF/DS_BUFFERED_LEN (512-aligned).

. /ds/pattern.sh

die()
{
    echo "DSVM-FAIL kernel-client: $*"
    exit 1
}

# sha256 of LEN bytes of DEV from byte 0, read through the page cache.
sum_of()
{
    _s=$(dd if="$1" bs=64k count="$(($2 / 65536))" 2>/dev/null | sha256sum)
    echo "${_s%% *}"
}

ip link set lo up || die "lo"
ip addr add 10.0.2.15/24 dev eth0 || die "cannot configure eth0"
ip link set eth0 up || die "cannot bring up eth0"

nbd-client "$DS_SERVER" "$DS_PORT" /dev/nbd0 -N "$DS_EXPORT" -b 512 ||
    die "nbd-client could not attach export '$DS_EXPORT'"
echo "DSVM: /dev/nbd0 attached to export '$DS_EXPORT'"

size=$(blockdev --getsize64 /dev/nbd0) || die "blockdev failed"
[ "$size" = "$DS_SIZE" ] || die "size is $size, expected $DS_SIZE"

sum=$(sum_of /dev/nbd0 1048576)
[ "$sum" = "$DS_SUM_1M" ] || die "first MiB sums to $sum, expected $DS_SUM_1M"
sum=$(sum_of /dev/nbd0 "$size")
[ "$sum" = "$DS_SUM_ALL" ] || die "device sums to $sum, expected $DS_SUM_ALL"
echo "DSVM: read $size bytes, sums match"

vm_pattern "$DS_SEED" $((DS_DIRECT_OFF / 512)) $((DS_DIRECT_LEN / 512)) \
    >/tmp/direct || die "cannot make the O_DIRECT pattern"
dd if=/tmp/direct of=/dev/nbd0 bs=4096 seek=$((DS_DIRECT_OFF / 4096)) \
    oflag=direct conv=notrunc 2>/tmp/dd.err ||
    die "O_DIRECT write failed: $(cat /tmp/dd.err)"

vm_pattern "$DS_SEED" $((DS_BUFFERED_OFF / 512)) $((DS_BUFFERED_LEN / 512)) \
    >/tmp/buffered || die "cannot make the buffered pattern"
dd if=/tmp/buffered of=/dev/nbd0 bs=512 seek=$((DS_BUFFERED_OFF / 512)) \
    conv=notrunc,fsync 2>/tmp/dd.err ||
    die "buffered write or fsync failed: $(cat /tmp/dd.err)"
echo "DSVM: wrote $DS_DIRECT_LEN bytes at $DS_DIRECT_OFF (O_DIRECT)" \
    "and $DS_BUFFERED_LEN bytes at $DS_BUFFERED_OFF (buffered, fsync)"

# Read back past the page cache: the O_DIRECT range directly, the buffered
# one after dropping the cached pages.
dd if=/dev/nbd0 of=/tmp/back bs=4096 skip=$((DS_DIRECT_OFF / 4096)) \
    count=$((DS_DIRECT_LEN / 4096)) iflag=direct 2>/tmp/dd.err ||
    die "O_DIRECT read failed: $(cat /tmp/dd.err)"
cmp /tmp/direct /tmp/back || die "O_DIRECT range reads back wrong"
blockdev --flushbufs /dev/nbd0 || die "flushbufs failed"
echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/nbd0 of=/tmp/back bs=512 skip=$((DS_BUFFERED_OFF / 512)) \
    count=$((DS_BUFFERED_LEN / 512)) 2>/tmp/dd.err ||
    die "read of the buffered range failed: $(cat /tmp/dd.err)"
cmp /tmp/buffered /tmp/back || die "buffered range reads back wrong"

nbd-client -d /dev/nbd0 || die "nbd-client -d failed"
echo "DSVM-PASS kernel-client seed=$DS_SEED"
