#!/bin/sh
# Claim: diskserve-img answers bad usage (no or unknown command, unknown
# options, missing or extra arguments, bad sizes and option values,
# option combinations qcow2 forbids) with one line on stderr and exit
# status 2, creates nothing then, and --help prints the usage with exit
# status 0.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/img/img-functions.sh"

cd "$T"
qemu-img create -q -f qcow2 ok.qcow2 1M

# bad ARGS...: exit 2, one line, no new file.
bad()
{
    local rc=0
    img "$@" >out.txt 2>err.txt || rc=$?
    [ "$rc" = 2 ] || fail "'$*': exit $rc, expected 2"
    [ "$(wc -l <err.txt)" = 1 ] ||
        { cat err.txt >&2; fail "'$*': not one line"; }
    [ ! -s out.txt ] || fail "'$*': wrote to stdout"
    [ ! -e new.qcow2 ] || fail "'$*': created a file"
}

bad
bad frobnicate
bad create
bad create -f qcow2
bad create -f qcow2 new.qcow2
bad create -f vmdk new.qcow2 1G
bad create -f qcow2 new.qcow2 1G extra
bad create -f qcow2 new.qcow2 12Q
bad create -f qcow2 new.qcow2 -5
bad create -f qcow2 --bogus new.qcow2 1G
bad create -f qcow2 -o cluster_size=1000 new.qcow2 1G
bad create -f qcow2 -o cluster_size=4M new.qcow2 1G
bad create -f qcow2 -o cluster_size=256 new.qcow2 1G
bad create -f qcow2 -o compat=0.9 new.qcow2 1G
bad create -f qcow2 -o compat=0.10,lazy_refcounts=on new.qcow2 1G
bad create -f qcow2 -o compat=0.10,refcount_bits=8 new.qcow2 1G
bad create -f qcow2 -o compat=0.10,extended_l2=on new.qcow2 1G
bad create -f qcow2 -o compat=0.10,compression_type=zstd new.qcow2 1G
bad create -f qcow2 -o extended_l2=on,cluster_size=8k new.qcow2 1G
bad create -f qcow2 -o refcount_bits=3 new.qcow2 1G
bad create -f qcow2 -o refcount_bits=128 new.qcow2 1G
bad create -f qcow2 -o compression_type=lz4 new.qcow2 1G
bad create -f qcow2 -o lazy_refcounts=maybe new.qcow2 1G
bad create -f qcow2 -o preallocation=full new.qcow2 1G
bad create -f qcow2 -o nonsense=1 new.qcow2 1G
bad create -f qcow2 -o cluster_size new.qcow2 1G
bad create -f qcow2 -o cluster_size=512 new.qcow2 1P
bad create -f qcow2 -b ok.qcow2 new.qcow2
bad create -f qcow2 -F qcow2 new.qcow2 1G
bad create -f raw -o cluster_size=64k new.qcow2 1G
bad info
bad info ok.qcow2 ok.qcow2
bad info --output=xml ok.qcow2
bad info --bogus ok.qcow2
bad map
bad map --output=xml ok.qcow2
bad map -f nope ok.qcow2
bad check
bad check -r some ok.qcow2
bad check --output=xml ok.qcow2
bad check ok.qcow2 ok.qcow2

img --help >out.txt || fail "--help exit"
grep -q "^Usage: diskserve-img" out.txt || fail "--help text"
for cmd in create info map check; do
    grep -q "^  $cmd " out.txt || fail "--help lacks $cmd"
done

# A failure that is not bad usage exits 1.
rc=0
img info missing.qcow2 2>/dev/null || rc=$?
[ "$rc" = 1 ] || fail "info of a missing file: exit $rc"
echo OK
