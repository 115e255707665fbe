#!/usr/bin/python3
"""Large reads (the ones the server splices from the page cache into the
socket) return exactly the image's bytes in every reply form: simple,
structured with and without DF, extended; pipelined 16 deep at random
offsets and lengths from 64 KiB to 10 MiB (one pipe or several, or
copied when more than the pipes hold), on a raw image written and
trimmed while it is read (on disk and on tmpfs, with small reads too),
on a read-only qcow2 with data, zero, compressed and backing-file
clusters, and on a VHDX.  Zero ranges of a structured reply
come as hole chunks.  A client that reads its replies slowly still gets
every byte, one that leaves mid-reply disturbs nobody, and the server
holds no more descriptors afterwards than its pipe pool allows.
qemu-img convert gives the expected bytes."""

import os
import random
import subprocess
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 48 * MIB
CLUSTER = 65536
seed = int(os.environ.get("SEED", random.randrange(1 << 30)))
rng = random.Random(seed)
print("seed %d" % seed)
MODES = ("simple", "structured", "extended")


def sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def as_raw(path, fmt):
    out = path + ".expect"
    sh("qemu-img", "convert", "-f", fmt, "-O", "raw", path, out)
    with open(out, "rb") as f:
        return f.read()


def connect(server, mode):
    c = server.connect()
    c.connect_export(structured=mode == "structured",
                     extended=mode == "extended",
                     meta=() if mode == "simple" else ("base:allocation",))
    return c


def random_reads(c, expect, n, label, max_len=10 * MIB, align=1,
                 min_len=64 * 1024):
    """n reads, 16 in flight, each checked against expect."""
    size = len(expect)
    pending = {}
    done = 0
    holes = 0
    while done < n:
        while len(pending) < 16 and done + len(pending) < n:
            length = rng.randrange(min_len, max_len + 1)
            if rng.random() < 0.5 and length >= 4096:
                length -= length % 4096
            length -= length % align
            off = rng.randrange(0, size - length + 1)
            off -= off % align
            flags = CMD_FLAG_DF if c.structured and rng.random() < 0.3 \
                else 0
            ck = c.send_request(CMD_READ, off, length, flags)
            pending[ck] = (off, length, flags)
        ck = next(iter(pending))
        off, length, flags = pending.pop(ck)
        res = c.reply(ck)
        check(res.error == 0, "%s: read %d+%d: error %d" %
              (label, off, length, res.error))
        check(res.data == expect[off:off + length],
              "%s: read %d+%d (flags %d) returned other bytes" %
              (label, off, length, flags))
        kinds = [t for (_, _, t, _) in res.chunks]
        if flags & CMD_FLAG_DF:
            check(kinds.count(REPLY_TYPE_OFFSET_DATA) <= 1,
                  "%s: DF read split into %r" % (label, kinds))
        holes += kinds.count(REPLY_TYPE_OFFSET_HOLE)
        done += 1
    return holes


def raw_read_while_written(directory, name):
    data = bytes(rng.getrandbits(8) for _ in range(MIB)) * (SIZE // MIB)
    img = os.path.join(directory, "ds-%d-%s.raw" % (os.getpid(), name))
    with open(img, "wb") as f:
        f.write(data)
    s = Server(img, "-f", "raw", name=name)
    expect = bytearray(data)
    for mode in MODES:
        c = connect(s, mode)
        random_reads(c, bytes(expect), 40, "raw " + mode)
        random_reads(c, bytes(expect), 40, "raw small " + mode,
                     max_len=64 * 1024, min_len=1)
        # A write acknowledged before a read is sent is in that read.
        for i in range(8):
            off = rng.randrange(0, SIZE - 2 * MIB) & ~4095
            buf = os.urandom(2 * MIB)
            check(c.write(off, buf).error == 0, "raw write")
            expect[off:off + len(buf)] = buf
            res = c.read(off - off % MIB, 3 * MIB) if off >= MIB else \
                c.read(off, 2 * MIB)
            start = off - off % MIB if off >= MIB else off
            check(res.data == bytes(expect[start:start + len(res.data)]),
                  "raw %s: read after write %d returned old bytes" %
                  (mode, i))
        c.close()
    # Every mode has read the file without holes (on tmpfs, small reads
    # sent from the server's mapping of it); now holes appear.
    for mode in MODES:
        c = connect(s, mode)
        # Trimmed ranges read as zeros, in small and large reads.
        off = rng.randrange(0, SIZE - MIB) & ~4095
        check(c.request(CMD_TRIM, off, MIB).error == 0, "raw trim")
        expect[off:off + MIB] = bytes(MIB)
        for length in (4096, 65536, MIB):
            res = c.read(off, length)
            check(res.data == bytes(length),
                  "raw %s: %d bytes after a trim are not zeros" %
                  (mode, length))
        random_reads(c, bytes(expect), 20, "raw trimmed " + mode,
                     max_len=2 * MIB, min_len=1)
        if mode != "simple":
            # Reading a hole leaves it a hole.
            res = c.request(CMD_BLOCK_STATUS, off, MIB)
            ext = res.extents[c.contexts["base:allocation"]]
            check(ext[0][0] >= 4096 and ext[0][1] & STATE_HOLE,
                  "raw %s: the trimmed range reads back as %r after reads"
                  % (mode, ext[:3]))
        c.close()
    if directory != scratch():
        state.setdefault("unlink", []).append(img)
    return s, bytes(expect)


def qcow2_read_only():
    d = scratch()
    base = os.path.join(d, "base.raw")
    with open(base, "wb") as f:
        f.write(os.urandom(16 * MIB))
        f.truncate(SIZE)
    top = os.path.join(d, "top.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base,
       "-o", "cluster_size=%d" % CLUSTER, top, str(SIZE))
    cmds = []
    for i in range(60):
        off = rng.randrange(0, SIZE // CLUSTER) * CLUSTER
        n = rng.randrange(1, 40) * CLUSTER
        n = min(n, SIZE - off)
        op = rng.choice(("write -P %d" % rng.randrange(1, 255),
                         "write -z", "write -z -u"))
        cmds += ["-c", "%s %d %d" % (op, off, n)]
    sh("qemu-io", "-f", "qcow2", *cmds, top)
    # A compressed cluster: the driver cannot map it for splicing.
    comp = os.path.join(d, "comp.qcow2")
    sh("qemu-img", "convert", "-c", "-O", "qcow2", "-B", base, "-F", "raw",
       top, comp)
    out = []
    for path in (top, comp):
        expect = as_raw(path, "qcow2")
        s = Server(path, "-f", "qcow2", "-r",
                   name=os.path.basename(path).split(".")[0])
        holes = 0
        for mode in MODES:
            c = connect(s, mode)
            holes += random_reads(c, expect, 30, "%s %s" % (path, mode))
            c.close()
        if path == top:
            check(holes > 0, "no hole chunk for the zero clusters of %s" %
                  path)
        out.append(s)
    return out


def vhdx_read_only():
    d = scratch()
    src = os.path.join(d, "v.raw")
    with open(src, "wb") as f:
        for i in range(SIZE // MIB):
            f.write(os.urandom(MIB) if i % 3 else bytes(MIB))
    v = os.path.join(d, "v.vhdx")
    sh("qemu-img", "convert", "-O", "vhdx", "-o", "block_size=1M", src, v)
    expect = as_raw(v, "vhdx")
    s = Server(v, "-f", "vhdx", "-r", name="vhdx")
    for mode in MODES:
        c = connect(s, mode)
        random_reads(c, expect, 30, "vhdx " + mode, align=512)
        c.close()
    return s


def fd_count(s):
    return len(os.listdir("/proc/%d/fd" % s.proc.pid))


def slow_and_vanishing_readers(s, expect):
    before = fd_count(s)
    c = connect(s, "structured")
    cookies = [(c.send_request(CMD_READ, i * 4 * MIB % (SIZE - 4 * MIB),
                               4 * MIB), i * 4 * MIB % (SIZE - 4 * MIB))
               for i in range(24)]
    time.sleep(0.5)     # let the socket fill up
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for ck, off in cookies:
        res = c.reply(ck)
        check(res.error == 0 and res.data == expect[off:off + 4 * MIB],
              "slow reader: read at %d returned other bytes" % off)
        time.sleep(0.01)
    c.close()
    for round_ in range(5):
        v = connect(s, rng.choice(MODES))
        for i in range(16):
            v.send_request(CMD_READ, rng.randrange(0, SIZE - 4 * MIB),
                           4 * MIB)
        time.sleep(0.2)
        v.recv_exact(100000)
        v.sock.close()
    b = connect(s, "simple")
    random_reads(b, expect, 10, "after vanishing readers")
    b.close()
    time.sleep(0.5)
    after = fd_count(s)
    check(after <= before + 2 * 64,
          "descriptors: %d before, %d after" % (before, after))


state = {}


def raw_reads_match_while_written_on_disk_and_in_memory():
    # On tmpfs the server fills pipes on the loop thread and copies small
    # reads from a mapping of the file; elsewhere workers fill the pipes.
    try:
        raw_read_while_written("/dev/shm", "raw-shm")
    finally:
        for p in state.get("unlink", []):
            os.unlink(p)
    state["raw"], state["expect"] = raw_read_while_written(scratch(),
                                                           "raw")


def read_only_qcow2_reads_match_with_holes_and_backing():
    qcow2_read_only()


def read_only_vhdx_reads_match():
    vhdx_read_only()


def slow_reader_gets_every_byte_and_vanishing_ones_harm_nothing():
    slow_and_vanishing_readers(state["raw"], state["expect"])


run(raw_reads_match_while_written_on_disk_and_in_memory,
    read_only_qcow2_reads_match_with_holes_and_backing,
    read_only_vhdx_reads_match,
    slow_reader_gets_every_byte_and_vanishing_ones_harm_nothing)
