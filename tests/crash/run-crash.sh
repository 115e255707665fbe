#!/bin/sh
# run-crash.sh: one crash-consistency run.  Creates an image, serves it
# with the I/O log on while workload.py drives it, stops the server, and
# has crash-check materialize and check the crash states.
#
#   run-crash.sh [OPTIONS] FORMAT SEED STATES CREATE-COMMAND...
#
# CREATE-COMMAND makes the image; IMG in its words is replaced by the
# image's path (other files it makes, such as a data or backing file, go
# beside it: IMG.data), e.g.
#   run-crash.sh qcow2 7 2000 \
#       qemu-img create -f qcow2 -o cluster_size=512 IMG 1M
#   run-crash.sh raw 7 1200 truncate -s 1M IMG
#
# OPTIONS
#   --requests N          workload requests (300)
#   --workload-arg ARG    pass ARG to workload.py (repeat for several)
#   --prep COMMAND        shell command run on the new image ($IMG)
#   --server-env VAR=VAL  set in the server's environment (repeatable)
#   --check-arg ARG       pass ARG to crash-check (repeatable)
#   --min-states N        fail unless at least N states were checked
#   --expect-failure      succeed only if crash-check reports failures
#   --expect-all-fail     succeed only if every state checked fails
#   --no-qemu             QEMU cannot open the image (a differencing VHDX
#                         file): starting contents through diskserve -r,
#                         and no qemu-img check of the states
#   --align N             requests of the workload and of crash-check are
#                         whole multiples of N 512-byte sectors (a file
#                         with 4096-byte logical sectors: 8)
#
# CRASH_JOBS sets how many states are checked at once (2).
#
# The log, workload record and starting files live in
# tests/crash/work-FORMAT-SEED-PID under the build directory; they are
# removed when the run ends as expected and kept otherwise, so the
# "reproduce:" lines crash-check prints stay valid.

. "$abs_top_srcdir/tests/functions.sh"

requests=300
workload_args=""
prep=""
server_env=""
check_args=""
min_states=1
expect_failure=0
expect_all=0
no_qemu=0
while [ $# -gt 0 ]; do
    case $1 in
    --requests) requests=$2; shift 2 ;;
    --workload-arg) workload_args="$workload_args $2"; shift 2 ;;
    --prep) prep=$2; shift 2 ;;
    --server-env) server_env="$server_env $2"; shift 2 ;;
    --check-arg) check_args="$check_args $2"; shift 2 ;;
    --min-states) min_states=$2; shift 2 ;;
    --expect-failure) expect_failure=1; shift ;;
    --expect-all-fail) expect_failure=1; expect_all=1; shift ;;
    --no-qemu) no_qemu=1; check_args="$check_args --no-qemu-check"; shift ;;
    --align)
        workload_args="$workload_args --align=$2"
        check_args="$check_args --align $2"
        shift 2 ;;
    --) shift; break ;;
    -*) fail "run-crash.sh: unknown option $1" ;;
    *) break ;;
    esac
done
[ $# -ge 4 ] ||
    fail "usage: run-crash.sh [OPTIONS] FORMAT SEED STATES CREATE-COMMAND..."
format=$1
seed=$2
states=$3
shift 3

require python3 qemu-img
CRASH_CHECK="$abs_top_builddir/tests/crash/crash-check"
[ -x "$CRASH_CHECK" ] || fail "$CRASH_CHECK not built"
echo "run-crash: format $format, seed $seed, $requests requests," \
     "up to $states states"

work="$abs_top_builddir/tests/crash/work-$format-$seed-$$"
rm -rf "$work"
mkdir -p "$work"
# Crash states go to memory: the checking server's fdatasync is free
# there.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    states_dir=$(mktemp -d /dev/shm/ds-crash.XXXXXX)
else
    states_dir="$T/states"
    mkdir -p "$states_dir"
fi
trap '_ds_cleanup; rm -rf "$states_dir"' EXIT

mkdir "$work/img"
IMG="$work/img/disk.$format"
export IMG
n=$#
for w in "$@"; do
    for _ in 1 2 3 4; do
        case $w in
        *IMG*) w="${w%%IMG*}$IMG${w#*IMG}" ;;
        esac
    done
    set -- "$@" "$w"
done
shift "$n"
"$@" || fail "cannot create the image: $*"
if [ -n "$prep" ]; then
    sh -c "$prep" || fail "prep command failed: $prep"
fi

# Starting contents: every file beside the image, and what the guest
# sees.
cp -a "$work/img" "$work/initial"
initial_args=""
for f in "$work"/initial/*; do
    initial_args="$initial_args --initial ${f##*/}=$f"
done
if [ "$no_qemu" = 1 ]; then
    ds_start initial -r -f "$format" "$IMG"
    qemu-img convert -f raw -O raw "$DS_URI" "$work/initial.raw" ||
        fail "cannot read the new image"
    ds_stop "$DS_PID" || fail "cannot serve the new image"
else
    qemu-img convert -f "$format" -O raw "$IMG" "$work/initial.raw" ||
        fail "cannot read the new image"
fi

for kv in $server_env; do
    export "$kv"
done
export DISKSERVE_IO_LOG="$work/io.log"
ds_start server -f "$format" "$IMG"
unset DISKSERVE_IO_LOG
for kv in $server_env; do
    unset "${kv%%=*}"
done

# shellcheck disable=SC2086
python3 "$abs_top_srcdir/tests/crash/workload.py" --uri "$DS_URI" \
    --seed "$seed" --requests "$requests" --out "$work/workload.txt" \
    $workload_args || fail "workload failed (server log: $T/server.log)"
ds_stop "$DS_PID" || fail "server exited with status $?"

rc=0
# shellcheck disable=SC2086
"$CRASH_CHECK" --log "$work/io.log" --workload "$work/workload.txt" \
    --format "$format" --image "disk.$format" $initial_args \
    --initial-content "$work/initial.raw" --dir "$states_dir" \
    --diskserve "$DISKSERVE" --states "$states" --seed "$seed" \
    --jobs "${CRASH_JOBS:-2}" $check_args >"$work/check.out" || rc=$?
cat "$work/check.out"
checked=$(sed -n 's/^crash-check: \([0-9]*\) states checked.*/\1/p' \
          "$work/check.out")
failed=$(sed -n \
    's/^crash-check: [0-9]* states checked, \([0-9]*\) failed.*/\1/p' \
    "$work/check.out")

if [ "$expect_failure" = 1 ]; then
    [ "$rc" = 1 ] && [ "${failed:-0}" -gt 0 ] ||
        fail "crash-check found nothing wrong (exit $rc); kept $work"
    [ "$expect_all" = 0 ] || [ "$failed" = "$checked" ] ||
        fail "only $failed of $checked broken states reported; kept $work"
else
    [ "$rc" = 0 ] || fail "crash-check failed (exit $rc); kept $work"
fi
[ "${checked:-0}" -ge "$min_states" ] ||
    fail "only ${checked:-0} states checked, want $min_states; kept $work"
rm -rf "$work"
