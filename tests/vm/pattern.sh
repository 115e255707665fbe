# The data pattern of the VM tests, shared by the host test and the guest
# (this file is copied into the root image).  Plain POSIX sh, so that
# bash on the host and busybox ash in the guest print the same bytes.
#
# Each 512-byte block names its seed and its block number, so a block
# written at the wrong offset, torn, or shifted by a few bytes never
# compares equal to the expected one.

# vm_pattern SEED FIRST COUNT: print COUNT blocks of 512 bytes, numbered
# from FIRST, for SEED (any word without spaces).
vm_pattern()
{
    _vp_n=$2
    _vp_end=$(($2 + $3))
    while [ "$_vp_n" -lt "$_vp_end" ]; do
        printf '%-511s\n' "diskserve-vm seed=$1 block=$_vp_n"
        _vp_n=$((_vp_n + 1))
    done
}
