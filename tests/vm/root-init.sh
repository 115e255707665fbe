#!/bin/sh
# /init of the VM tests' root filesystem (built by mkroot.sh).  It runs
# from the disk the server under test exports, so every file it reads has
# crossed NBD.  It loads the modules the guest scripts need (network, nbd),
# turns each ds.KEY=VALUE word of the kernel command line into DS_KEY,
# runs the guest script /ds/guest-$DS_RUN.sh and powers the machine off.
# The host reads the verdict from the serial log: the guest script prints
# DSVM-PASS or DSVM-FAIL, and this prints DSVM-EXIT with its status.

PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH

finish()
{
    echo "DSVM-EXIT $1"
    sync
    poweroff -f
    sleep 10
}

mount -t tmpfs tmpfs /tmp || { echo "DSVM-FAIL root: no /tmp"; finish 1; }

while read -r mod; do
    insmod "/lib/modules/$mod.ko" ||
        { echo "DSVM-FAIL root: insmod $mod failed"; finish 1; }
done </lib/modules/load-order

for word in $(cat /proc/cmdline); do
    case $word in
        ds.*=*)
            key=${word%%=*}
            key=$(echo "${key#ds.}" | tr 'a-z.-' 'A-Z__')
            export "DS_$key=${word#*=}"
            ;;
    esac
done

script="/ds/guest-${DS_RUN:-none}.sh"
if [ ! -f "$script" ]; then
    echo "DSVM-FAIL root: no guest script $script"
    finish 1
fi
echo "DSVM: running $script"
rc=0
sh "$script" || rc=$?
finish "$rc"
