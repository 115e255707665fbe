#!/usr/bin/python3
"""Large reads of a writable qcow2 splice its pages into the socket; the
clusters they map must not be given to other guest ranges until those
replies are out.  One connection keeps trimming 1 MiB chunks and writing
others (so freed clusters are reused at once) while another pipelines
1 MiB reads over the same area and reads its replies slowly.  A read
racing a trim of its own range may see old data, new data or zeros, but
never another range's bytes: every 8-byte word of the test data names
its guest offset (pattern() with a per-write seed), so a word that does
not name the offset it was read from is another range's data.  Run on
the file system of TMPDIR (a worker fills the pipes) and on /dev/shm
(the loop does).  Two things keep this true, and the test sees only
their sum: the pins a spliced read holds until its reply is written
(map_pin), and the hole the driver punches into the file for every
freed cluster, which leaves the pages a pipe holds out of the file."""

import os
import random
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 32 * MIB
CHUNK = MIB
ROUNDS = 60
seed = int(os.environ.get("SEED", random.randrange(1 << 30)))
rng = random.Random(seed)
print("seed %d" % seed)


def check_words(data, offset, seeds, label):
    n = len(data) // 8
    words = struct.unpack(">%dQ" % n, data[:n * 8])
    for i, w in enumerate(words):
        if w == 0:
            continue
        if (w ^ (offset + 8 * i)) not in seeds:
            check(False, "%s: word at %d is another range's data (0x%x)" %
                  (label, offset + 8 * i, w))


def race(directory, label):
    path = os.path.join(directory, "race-%d.qcow2" % os.getpid())
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    "cluster_size=65536", path, str(SIZE)], check=True)
    try:
        s = Server(path, "-f", "qcow2", name=label)
        w = s.connect()
        w.connect_export(structured=True)
        seeds = {1}
        for off in range(0, SIZE, CHUNK):
            check(w.write(off, pattern(off, CHUNK, 1)).error == 0, "fill")
        stop = threading.Event()
        errors = []

        def writer():
            try:
                gen = 1
                while not stop.is_set():
                    gen += 1
                    seeds.add(gen)
                    a = rng.randrange(0, SIZE // CHUNK) * CHUNK
                    b = rng.randrange(0, SIZE // CHUNK) * CHUNK
                    check(w.request(CMD_TRIM, a, CHUNK).error == 0, "trim")
                    # The freed clusters are reusable once the L2 change
                    # is on disk.
                    check(w.request(CMD_FLUSH).error == 0, "flush")
                    check(w.write(b, pattern(b, CHUNK, gen)).error == 0,
                          "write")
            except Exception as e:  # reported by the main thread
                errors.append(e)

        t = threading.Thread(target=writer)
        r = s.connect()
        r.connect_export(structured=True)
        r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        t.start()
        try:
            pending = []
            for i in range(ROUNDS):
                while len(pending) < 16:
                    off = rng.randrange(0, SIZE // CHUNK) * CHUNK
                    flags = CMD_FLAG_DF if rng.random() < 0.5 else 0
                    pending.append((r.send_request(CMD_READ, off, CHUNK,
                                                   flags), off))
                time.sleep(0.002)
                ck, off = pending.pop(0)
                res = r.reply(ck)
                check(res.error == 0, "read error %d" % res.error)
                check_words(res.data, off, seeds, label)
            for ck, off in pending:
                check_words(r.reply(ck).data, off, seeds, label)
        finally:
            stop.set()
            t.join()
        if errors:
            raise errors[0]
        w.close()
        r.close()
        check(s.stop() == 0, "server did not stop cleanly")
        out = subprocess.run(["qemu-img", "check", path],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        check(out.returncode == 0, "qemu-img check: %s" % out.stdout)
    finally:
        os.unlink(path)


def reads_from_disk_never_show_reused_clusters():
    race(scratch(), "disk")


def reads_from_memory_never_show_reused_clusters():
    race("/dev/shm", "shm")


run(reads_from_disk_never_show_reused_clusters,
    reads_from_memory_never_show_reused_clusters)
