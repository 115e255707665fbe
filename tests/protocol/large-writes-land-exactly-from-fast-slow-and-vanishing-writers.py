#!/usr/bin/python3
"""Large writes to a raw image land exactly: pipelined 16 deep at random
offsets and lengths from 64 KiB to 2 MiB, some with FUA, in compact and
extended requests; from a client that sends each payload in small
pieces with pauses, or in 1 KiB pieces back to back; and a client that
leaves in the middle of a payload changes nothing past what it had
acknowledged and disturbs nobody.  The file itself is compared with a
shadow copy after the server stops."""

import os
import random
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 32 * MIB
seed = int(os.environ.get("SEED", random.randrange(1 << 30)))
rng = random.Random(seed)
print("seed %d" % seed)

img = make_image("disk.raw", SIZE, os.urandom(SIZE))
with open(img, "rb") as f:
    shadow = bytearray(f.read())
srv = Server(img, "-f", "raw")


def connect(mode):
    c = srv.connect()
    c.connect_export(structured=mode != "simple", extended=mode == "extended")
    return c


def random_writes(c, n, label):
    pending = {}
    sent = 0
    while sent < n or pending:
        while len(pending) < 16 and sent < n:
            length = rng.randrange(64 * 1024, 2 * MIB + 1)
            if rng.random() < 0.5:
                length -= length % 4096
            off = rng.randrange(0, SIZE - length + 1)
            data = os.urandom(length)
            flags = CMD_FLAG_FUA if rng.random() < 0.2 else 0
            ck = c.send_request(CMD_WRITE, off, length, flags, data)
            pending[ck] = (off, data)
            sent += 1
        ck = next(iter(pending))
        off, data = pending.pop(ck)
        res = c.reply(ck)
        check(res.error == 0, "%s: write at %d: error %d" %
              (label, off, res.error))
        shadow[off:off + len(data)] = data
    # Every write above was acknowledged; read a few ranges back.
    for _ in range(8):
        off = rng.randrange(0, SIZE - MIB)
        res = c.read(off, MIB)
        check(res.data == bytes(shadow[off:off + MIB]),
              "%s: read back at %d differs" % (label, off))


def pipelined_writes_land():
    for mode in ("simple", "structured", "extended"):
        c = connect(mode)
        random_writes(c, 60, mode)
        c.close()


def trickled_payloads_land():
    c = connect("structured")
    for i in range(4):
        length = rng.randrange(256 * 1024, MIB)
        off = rng.randrange(0, SIZE - length)
        data = os.urandom(length)
        hdr_sent = c.send_request(CMD_WRITE, off, length, 0, b"")
        # The payload follows in pieces, with pauses the server must
        # wait through.
        pos = 0
        while pos < length:
            step = rng.randrange(1, 200000)
            c.send(data[pos:pos + step])
            pos += step
            time.sleep(0.01)
        res = c.reply(hdr_sent)
        check(res.error == 0, "trickled write %d: error %d" % (i, res.error))
        shadow[off:off + length] = data
    c.close()


def payloads_in_tiny_pieces_land():
    # Each send is a socket buffer of its own: a thousand of them make
    # one payload.
    c = connect("simple")
    for i in range(3):
        length = MIB
        off = rng.randrange(0, SIZE - length)
        data = os.urandom(length)
        ck = c.send_request(CMD_WRITE, off, length, 0, b"")
        for pos in range(0, length, 1024):
            c.send(data[pos:pos + 1024])
        res = c.reply(ck)
        check(res.error == 0, "tiny-piece write %d: error %d" %
              (i, res.error))
        shadow[off:off + length] = data
        res = c.read(off, length)
        check(res.data == data, "tiny-piece write %d reads back wrong" % i)
    c.close()


def vanishing_writer_changes_only_what_it_sent():
    c = connect("structured")
    off = 4 * MIB
    length = 2 * MIB
    c.send_request(CMD_WRITE, off, length, 0, b"")
    c.send(os.urandom(300000))
    time.sleep(0.2)
    c.sock.close()
    time.sleep(0.2)
    # The cut write was never acknowledged: its range may hold old or
    # new bytes up to what was sent, so the shadow takes the file's
    # word for that range only, and only after checking the part never
    # sent is untouched.
    b = connect("simple")
    res = b.read(off + 300000, length - 300000)
    check(res.data == bytes(shadow[off + 300000:off + length]),
          "bytes of the cut write that were never sent changed")
    res = b.read(off, 300000)
    shadow[off:off + 300000] = res.data
    random_writes(b, 10, "after a vanishing writer")
    b.close()


def file_matches_shadow():
    check(srv.stop() == 0, "server did not stop cleanly")
    with open(img, "rb") as f:
        data = f.read()
    check(len(data) == SIZE, "file size changed to %d" % len(data))
    if data != bytes(shadow):
        first = next(i for i in range(SIZE) if data[i] != shadow[i])
        check(False, "file differs from the shadow from byte %d" % first)


run(pipelined_writes_land, trickled_payloads_land,
    payloads_in_tiny_pieces_land,
    vanishing_writer_changes_only_what_it_sent, file_matches_shadow)
