#!/usr/bin/python3
"""With NBD_OPT_EXTENDED_HEADERS negotiated, requests go out as 32-byte
headers with 64-bit lengths, and every reply comes back under the 32-byte
extended reply header carrying the request's offset: reads, writes,
flushes, errors and block status (as BLOCK_STATUS_EXT with 64-bit
descriptors).  A compact request on such a connection is a bad magic."""

import os
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 64 * MIB


def all_extended(res):
    """Every message of the reply used the extended header."""
    check(res.chunks, "no reply messages")
    for magic, _, _, hoff in res.chunks:
        check(magic == EXT_REPLY_MAGIC,
              "reply magic 0x%08x on an extended connection" % magic)
        check(hoff == res.offset, "header offset %r, request offset %d" %
              (hoff, res.offset))


def start():
    img = make_image("disk.raw", SIZE)
    return Server(img, "-f", "raw", name="ext")


def negotiation_acks_and_go_succeeds():
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_EXTENDED_HEADERS, REP_ACK)
    # Extended headers imply structured replies: meta contexts work.
    ctx = c.set_meta([b"base:allocation"])
    check("base:allocation" in ctx, "base:allocation not selected: %r" % ctx)
    c.extended = c.structured = True
    final, infos = c.go(b"", (INFO_BLOCK_SIZE,))
    check(final.type == REP_ACK, "GO: %r" % final)
    check(c.size == SIZE, "size %d" % c.size)
    check(infos[INFO_BLOCK_SIZE] == (1, 4096, MAX_PAYLOAD),
          "block sizes %r" % (infos[INFO_BLOCK_SIZE],))
    check(c.tflags & TFLAG_SEND_DF, "SEND_DF missing with extended headers")
    res = c.read(0, 512)
    all_extended(res)
    c.close()


def second_extended_headers_is_refused():
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_EXTENDED_HEADERS, REP_ACK)
    final, _ = c.option(OPT_EXTENDED_HEADERS)
    check(final.type & REP_FLAG_ERROR, "second EXTENDED_HEADERS: %r" % final)
    # EXTENDED_HEADERS with data is malformed.
    c2 = srv.connect()
    c2.handshake()
    c2.expect_option(OPT_EXTENDED_HEADERS, REP_ERR_INVALID, b"x")
    c2.expect_option(OPT_LIST, REP_ACK)
    c.close()
    c2.close()


def write_read_flush_round_trip():
    c = srv.connect()
    c.connect_export(extended=True, meta=["base:allocation"])
    for off, n in ((0, 4096), (1 * MIB + 512, 65536), (SIZE - 1000, 1000),
                   (7, 1), (3 * MIB, 4 * MIB)):
        data = pattern(off, n, seed=0x5eed)
        res = c.write(off, data, CMD_FLAG_FUA)
        check(res.error == 0, "write %d+%d: error %d" % (off, n, res.error))
        all_extended(res)
        res = c.read(off, n)
        check(res.error == 0, "read %d+%d: error %d" % (off, n, res.error))
        all_extended(res)
        check(res.data == data, "read %d+%d returned other bytes" % (off, n))
    # WRITE may carry PAYLOAD_LEN with extended headers.
    data = pattern(8 * MIB, 8192, seed=7)
    res = c.request(CMD_WRITE, 8 * MIB, len(data), CMD_FLAG_PAYLOAD_LEN,
                    data)
    check(res.error == 0, "write with PAYLOAD_LEN: error %d" % res.error)
    all_extended(res)
    check(c.read(8 * MIB, 8192).data == data, "PAYLOAD_LEN write lost")
    res = c.request(CMD_FLUSH)
    check(res.error == 0, "flush: error %d" % res.error)
    all_extended(res)
    # DF read: one content chunk at most.
    res = c.read(0, 65536, CMD_FLAG_DF)
    check(res.error == 0, "DF read: error %d" % res.error)
    all_extended(res)
    content = [t for _, _, t, _ in res.chunks
               if t in (REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE)]
    check(len(content) <= 1, "DF read in %d content chunks" % len(content))
    c.disconnect()
    c.wait_closed()


def requests_in_flight_are_matched_by_cookie():
    c = srv.connect()
    c.connect_export(extended=True)
    cookies = {}
    for i in range(32):
        off = 16 * MIB + i * 8192
        data = pattern(off, 8192, seed=i)
        cookies[c.send_request(CMD_WRITE, off, 8192, 0, data)] = off
    for ck, off in cookies.items():
        res = c.reply(ck)
        check(res.error == 0, "write at %d: error %d" % (off, res.error))
        all_extended(res)
    reads = {c.send_request(CMD_READ, off, 8192): off
             for off in cookies.values()}
    for ck, off in reads.items():
        res = c.reply(ck)
        all_extended(res)
        i = (off - 16 * MIB) // 8192
        check(res.data == pattern(off, 8192, seed=i),
              "read at %d returned other bytes" % off)
    c.close()


def block_status_uses_64_bit_descriptors():
    c = srv.connect()
    c.connect_export(extended=True, meta=["base:allocation"])
    cid = c.contexts["base:allocation"]
    data = pattern(32 * MIB, 1 * MIB)
    check(c.write(32 * MIB, data).error == 0, "write failed")
    for off, n, flags in ((0, SIZE, 0), (32 * MIB, 1 * MIB, 0),
                          (32 * MIB - 4096, 8192, CMD_FLAG_REQ_ONE),
                          (SIZE - 512, 512, 0)):
        res = c.request(CMD_BLOCK_STATUS, off, n, flags)
        check(res.error == 0, "block status %d+%d: error %d" %
              (off, n, res.error))
        all_extended(res)
        types = [t for _, _, t, _ in res.chunks]
        check(REPLY_TYPE_BLOCK_STATUS_EXT in types,
              "no BLOCK_STATUS_EXT chunk: %r" % types)
        check(REPLY_TYPE_BLOCK_STATUS not in types,
              "compact BLOCK_STATUS on an extended connection")
        ext = res.extents[cid]
        if flags & CMD_FLAG_REQ_ONE:
            check(len(ext) == 1 and ext[0][0] <= n,
                  "REQ_ONE answered with %r" % ext)
        # The data just written is not a hole; its range is described.
        covered = 0
        for length, st in ext:
            check(st & ~(STATE_HOLE | STATE_ZERO) == 0,
                  "unknown base:allocation bits 0x%x" % st)
            lo, hi = off + covered, off + covered + length
            if lo < 33 * MIB and hi > 32 * MIB:
                check(not st & STATE_ZERO,
                      "written data reported as zero at %d+%d" % (lo, length))
            covered += length
    c.close()


def errors_come_in_extended_chunks():
    c = srv.connect()
    c.connect_export(extended=True, meta=["base:allocation"])
    # With structured replies the spec also allows EOVERFLOW for a read
    # too large to serve.
    big = (EINVAL, EOVERFLOW)
    for cmd, off, n, flags, want in (
            (CMD_READ, SIZE, 4096, 0, (EINVAL,)),  # past the end
            (CMD_READ, 0, MAX_PAYLOAD + 1, 0, big),
            (CMD_READ, 0, 5 * GIB, 0, big),        # 64-bit length
            (CMD_TRIM, SIZE - 4096, 8192, 0, (EINVAL,)),
            (CMD_BLOCK_STATUS, SIZE, 512, 0, (EINVAL,)),
            (CMD_READ, 0, 512, CMD_FLAG_REQ_ONE, (EINVAL,)),
            (99, 0, 512, 0, (EINVAL,))):           # unknown command
        res = c.request(cmd, off, n, flags)
        check(res.error in want, "cmd %d %d+%d flags 0x%x: error %d, "
              "expected %r" % (cmd, off, n, flags, res.error, want))
        all_extended(res)
    # Still in business afterwards.
    check(c.read(0, 512).error == 0, "read after errors failed")
    c.close()


def compact_request_is_a_protocol_violation():
    c = srv.connect()
    c.connect_export(extended=True)
    c.send_request(CMD_READ, 0, 512, magic=REQUEST_MAGIC, expect_reply=False)
    junk = c.wait_closed(15)
    check(junk == b"", "server answered a compact request: %r" % junk[:32])
    other = srv.connect()
    other.connect_export(extended=True)
    check(other.read(0, 512).error == 0, "other client disturbed")
    other.close()


srv = start()
run(negotiation_acks_and_go_succeeds,
    second_extended_headers_is_refused,
    write_read_flush_round_trip,
    requests_in_flight_are_matched_by_cookie,
    block_status_uses_64_bit_descriptors,
    errors_come_in_extended_chunks,
    compact_request_is_a_protocol_violation)
