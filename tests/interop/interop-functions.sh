# Helpers for the interop tests, on top of tests/functions.sh (source
# that first).  The tools under test are independent NBD implementations
# (libnbd's nbdinfo and nbdcopy, qemu's block layer); each test states
# exactly what they must see.

# ds_start_tcp NAME [diskserve options and image]: start diskserve on a
# free port of 127.0.0.1.  Sets DS_PID, DS_PORT, DS_TCP_URI; the log goes
# to $T/NAME.log.
ds_start_tcp()
{
    local name=$1 hexport
    shift
    for _attempt in 1 2 3 4 5; do
        DS_PORT=$(/usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
        "$DISKSERVE" -b 127.0.0.1 -p "$DS_PORT" "$@" >"$T/$name.log" 2>&1 &
        DS_PID=$!
        _ds_pids="$_ds_pids $DS_PID"
        DS_TCP_URI="nbd://127.0.0.1:$DS_PORT/"
        hexport=$(printf '%04X' "$DS_PORT")
        for _ in $(seq 200); do
            kill -0 "$DS_PID" 2>/dev/null || break
            if awk -v p=":$hexport" '$2 ~ p"$" && $4 == "0A" { f = 1 }
                                     END { exit !f }' /proc/net/tcp; then
                return 0
            fi
            sleep 0.05
        done
        kill -0 "$DS_PID" 2>/dev/null &&
            fail "diskserve on port $DS_PORT did not listen in 10 s"
    done
    cat "$T/$name.log" >&2
    fail "diskserve could not listen on TCP"
}

# write_data IMAGE SEED OFFSET:LENGTH...: write seeded random bytes at
# each range of an existing file, leaving the rest as it is.
write_data()
{
    /usr/bin/python3 - "$@" <<'PY'
import random, sys
path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
with open(path, "r+b") as f:
    for r in sys.argv[3:]:
        off, length = (int(x) for x in r.split(":"))
        f.seek(off)
        f.write(rng.randbytes(length))
PY
}

# test_seed: DS_SEED from the environment, or a new one; printed.
test_seed()
{
    SEED=${DS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
    echo "seed $SEED (replay with DS_SEED=$SEED)"
}
