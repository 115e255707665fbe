# Guest half of the vm-qcow2-root-*.sh tests, run by the root
# filesystem's /init from a root mounted read-write (ds.rootmode=rw)
# from a qcow2 image the server under test exports read-write.  It
# writes files of random bytes, copies, overwrites part of and deletes
# some, syncs, prints each surviving file's sha256 as
#
#   DSVM-SUM /qw/NAME SHA256
#
# re-reads them all after dropping the page cache (so the sums are of
# what the server returns), and remounts the root read-only, which
# writes the journal's changes in place: the host then reads the files
# out of the image with debugfs and compares the sums.
#
# Parameters (kernel command line, see root-init.sh): DS_SEED, which
# picks the file sizes.

die()
{
    echo "DSVM-FAIL qcow2-root: $*"
    exit 1
}

sum_of()
{
    _s=$(sha256sum "$1") || die "cannot read $1"
    echo "${_s%% *}"
}

seed=${DS_SEED:-1}
# Sizes in KiB from the seed's digits: 256 to 1279, 1024 to 2047.
small=$((256 + seed % 1024))
big=$((1024 + seed / 1024 % 1024))

mkdir -p /qw || die "cannot create /qw"
dd if=/dev/urandom of=/qw/small bs=1k count=$small 2>/dev/null ||
    die "cannot write /qw/small"
dd if=/dev/urandom of=/qw/big bs=64k count=$((big / 64)) 2>/dev/null ||
    die "cannot write /qw/big"
dd if=/dev/urandom of=/qw/doomed bs=4k count=512 2>/dev/null ||
    die "cannot write /qw/doomed"
sync
cp /qw/small /qw/small.copy || die "cp small"
cp /qw/big /qw/big.copy || die "cp big"
# Overwrite the middle of big in place, not page-aligned.
dd if=/dev/urandom of=/qw/big bs=1000 seek=333 count=700 conv=notrunc \
    2>/dev/null || die "cannot overwrite part of /qw/big"
# Many small appends: one file growing a block at a time.
i=0
while [ $i -lt 200 ]; do
    echo "line $i of seed $seed" >>/qw/appended || die "append $i"
    i=$((i + 1))
done
rm /qw/doomed || die "rm doomed"
# Freed blocks reused by a new file.
dd if=/dev/urandom of=/qw/reuse bs=4k count=384 2>/dev/null ||
    die "cannot write /qw/reuse"
sync

names="small small.copy big big.copy appended reuse"
for n in $names; do
    echo "DSVM-SUM /qw/$n $(sum_of /qw/$n)"
done >/tmp/sums
cat /tmp/sums
[ "$(sum_of /qw/small)" = "$(sum_of /qw/small.copy)" ] ||
    die "the copy of small differs"

# Read everything again from the server, not the page cache.
echo 3 >/proc/sys/vm/drop_caches
for n in $names; do
    echo "DSVM-SUM /qw/$n $(sum_of /qw/$n)"
done >/tmp/sums.again
cmp -s /tmp/sums /tmp/sums.again ||
    die "files read back differently after dropping the page cache"
[ ! -e /qw/doomed ] || die "/qw/doomed is still there"

mount -o remount,ro / || die "cannot remount / read-only"
echo "DSVM-PASS qcow2-root seed=$seed"
