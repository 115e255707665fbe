#!/usr/bin/python3
"""Extended headers carry 64-bit effect lengths: on a 12 GiB sparse
export, one WRITE_ZEROES and one TRIM of more than 4 GiB each succeed and
take effect exactly over their range (a 32-bit truncation would stop
short or wrap), a 64-bit range past the end is refused, and block status
over more than 4 GiB answers with 64-bit descriptors."""

import os
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 12 * GIB
CHUNK = 64 * 1024


def write_marks(c, offsets):
    for off in offsets:
        res = c.write(off, pattern(off, CHUNK, seed=off))
        check(res.error == 0, "write at %d: error %d" % (off, res.error))


def zeroes_over_4g_land_exactly():
    c = srv.connect()
    c.connect_export(extended=True, meta=["base:allocation"])
    check(c.size == SIZE, "size %d" % c.size)
    check(c.tflags & TFLAG_SEND_WRITE_ZEROES, "no WRITE_ZEROES advertised")
    start = 4 * GIB + 4096
    length = 5 * GIB              # ends at 9 GiB + 4096
    end = start + length
    write_marks(c, (start - CHUNK, 5 * GIB, 9 * GIB))
    res = c.request(CMD_WRITE_ZEROES, start, length)
    check(res.error == 0, "WRITE_ZEROES of %d bytes: error %d" %
          (length, res.error))
    check(all(m == EXT_REPLY_MAGIC for m, _, _, _ in res.chunks),
          "reply not in extended headers")
    # Before the range: untouched.
    check(c.read(start - CHUNK, CHUNK).data ==
          pattern(start - CHUNK, CHUNK, seed=start - CHUNK),
          "data before the zeroed range changed")
    # Inside: zero (5 GiB is beyond what a 32-bit length could reach from
    # start, 9 GiB is near the far end).
    check(c.read(5 * GIB, CHUNK).data == bytes(CHUNK),
          "5 GiB not zeroed")
    tail = c.read(9 * GIB, CHUNK).data
    check(tail[:end - 9 * GIB] == bytes(end - 9 * GIB),
          "range end at 9 GiB + 4096 not zeroed")
    # After: the rest of the mark survives, to the byte.
    check(tail[end - 9 * GIB:] ==
          pattern(9 * GIB, CHUNK, seed=9 * GIB)[end - 9 * GIB:],
          "data after the zeroed range changed")
    c.close()


def trim_over_4g_succeeds():
    c = srv.connect()
    c.connect_export(extended=True)
    check(c.tflags & TFLAG_SEND_TRIM, "no TRIM advertised")
    write_marks(c, (11 * GIB,))
    res = c.request(CMD_TRIM, 1 * GIB, 6 * GIB + 512)
    check(res.error == 0, "TRIM of 6 GiB: error %d" % res.error)
    # Trim may discard or not, but must leave data outside its range.
    check(c.read(11 * GIB, CHUNK).data ==
          pattern(11 * GIB, CHUNK, seed=11 * GIB),
          "data outside the trimmed range changed")
    res = c.request(CMD_TRIM, 0, SIZE, CMD_FLAG_FUA)
    check(res.error == 0, "TRIM of the whole export: error %d" % res.error)
    c.close()


def ranges_past_the_end_are_refused():
    c = srv.connect()
    c.connect_export(extended=True, meta=["base:allocation"])
    for cmd, off, n in ((CMD_WRITE_ZEROES, 0, SIZE + 1),
                        (CMD_WRITE_ZEROES, 8 * GIB, 4 * GIB + 512),
                        (CMD_TRIM, 4 * GIB, 2**64 - 4 * GIB),
                        (CMD_TRIM, 2**63, 2**63),
                        (CMD_BLOCK_STATUS, SIZE - 512, 1024),
                        (CMD_CACHE, 1, SIZE)):
        res = c.request(cmd, off, n)
        ok = (ENOSPC,) if cmd == CMD_WRITE_ZEROES else (EINVAL,)
        check(res.error in ok, "cmd %d %d+%d: error %d, expected %r" %
              (cmd, off, n, res.error, ok))
    check(c.read(0, 512).error == 0, "connection broken after errors")
    c.close()


def block_status_covers_more_than_4g():
    c = srv.connect()
    c.connect_export(extended=True, meta=["base:allocation"])
    cid = c.contexts["base:allocation"]
    write_marks(c, (10 * GIB,))
    res = c.request(CMD_BLOCK_STATUS, 0, SIZE)
    check(res.error == 0, "block status: error %d" % res.error)
    ext = res.extents[cid]
    # The never-written start of a sparse file is a hole that reads as
    # zeroes.
    check(ext[0][1] == STATE_HOLE | STATE_ZERO,
          "offset 0 of a sparse file reported as 0x%x" % ext[0][1])
    pos = 0
    for length, st in ext:
        if pos <= 10 * GIB < pos + length:
            check(not st & STATE_ZERO, "written data at 10 GiB reported "
                  "as zeroes (extent %d+%d 0x%x)" % (pos, length, st))
        pos += length
    res = c.request(CMD_BLOCK_STATUS, 0, 8 * GIB, CMD_FLAG_REQ_ONE)
    check(res.error == 0, "block status REQ_ONE: error %d" % res.error)
    one = res.extents[cid]
    check(len(one) == 1 and one[0][0] <= 8 * GIB,
          "REQ_ONE answered with %r" % one)
    c.close()


srv = Server(make_image("big.raw", SIZE), "-f", "raw", name="big")
run(zeroes_over_4g_land_exactly,
    trim_over_4g_succeeds,
    ranges_past_the_end_are_refused,
    block_status_covers_more_than_4g)
