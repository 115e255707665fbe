#!/usr/bin/python3
"""A write whose payload is too big even to read and drop (over twice
the 32 MiB limit: 64 MiB + 1, 100 MiB, 4 GiB - 1 in a compact header, 1
TiB in an extended one) is refused with an error reply that reaches the
client before the server closes the connection, in every reply mode.
The requests pipelined ahead of it (a write, a read, a flush) are
carried out and answered first; only then does the connection end, and
the server goes on serving others.  (The error reply was once queued
and the connection closed at once, dropping it.)"""

import os
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 64 * MIB
# The most of a refused payload the server reads and drops to keep the
# connection (server/request.c, DISCARD_MAX).
DISCARD_MAX = 2 * MAX_PAYLOAD
WRITE_AT = 8 * MIB      # where the pipelined writes go, 64 KiB apart
seen = []               # (mode, length, error) of each refused write


def cases():
    """(reply mode, announced length) of each too-big write."""
    for mode in ("simple", "structured", "extended"):
        for length in (DISCARD_MAX + 1, 100 * MIB, 2**32 - 1):
            yield mode, length
    yield "extended", 1 << 40


def refused_write_gets_its_reply_after_pipelined_ones():
    for i, (mode, length) in enumerate(cases()):
        what = "%s, %d-byte write" % (mode, length)
        c = srv.connect()
        c.connect_export(structured=mode == "structured",
                         extended=mode == "extended")
        off = WRITE_AT + i * 65536
        data = pattern(off, 65536, seed=0xb16 + i)
        names = {
            c.send_request(CMD_WRITE, off, len(data), 0, data): "write",
            c.send_request(CMD_READ, 0, MIB): "read",
            c.send_request(CMD_FLUSH): "flush",
        }
        # The header and the first 4 KiB of the payload it announces.
        big = c.send_request(CMD_WRITE, 0, length, 0, b"\xab" * 4096)
        names[big] = "refused write"
        try:
            while c.pending:
                c.read_message()
        except Closed as e:
            missing = ", ".join(names[k] for k in sorted(c.pending))
            raise AssertionError("%s: connection closed (%s) without the "
                                 "replies to: %s" % (what, e, missing))
        res = {names[k]: c.reply(k) for k in list(c.done)}
        check(res["refused write"].error != 0,
              "%s: the refused write succeeded" % what)
        seen.append((mode, length, res["refused write"].error))
        check(res["write"].error == 0,
              "%s: pipelined write: error %d" % (what, res["write"].error))
        check(res["read"].error == 0 and
              res["read"].data == pattern(0, MIB),
              "%s: pipelined read failed or read wrong data" % what)
        check(res["flush"].error == 0,
              "%s: pipelined flush: error %d" % (what, res["flush"].error))
        junk = c.wait_closed(15)
        check(junk == b"", "%s: %d bytes after the replies" %
              (what, len(junk)))
        c.close()
        # The write before the refused one stuck; the server serves on.
        other = srv.connect()
        other.connect_export()
        check(other.read(off, len(data)).data == data,
              "%s: the pipelined write is not on the disk" % what)
        other.close()
    for mode, length, err in seen:
        print("%s, %d bytes: error %d" % (mode, length, err))


img = make_image("disk.raw", SIZE, pattern(0, MIB))
srv = Server(img, "-f", "raw", name="big")
run(refused_write_gets_its_reply_after_pipelined_ones)
