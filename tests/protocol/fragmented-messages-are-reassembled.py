#!/usr/bin/python3
"""Message boundaries mean nothing on a stream: a client that dribbles
its flags, options, request headers and write payloads a byte at a time
is served exactly like one that sends them whole, and a client that
packs many messages (options, then requests with payloads) into one
send is served in order."""

import os
import struct
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 8 * MIB


class Dribble(Conn):
    """A Conn whose every send goes out one byte at a time."""

    def send(self, data):
        for i in range(len(data)):
            Conn.send(self, data[i:i + 1])
            if i < 64:
                # Give the server a chance to read each byte on its own.
                time.sleep(0.001)


def dribbled_session_works():
    for mode in ("simple", "structured", "extended"):
        c = srv.connect()
        c.__class__ = Dribble
        c.connect_export(structured=mode == "structured",
                         extended=mode == "extended",
                         meta=["base:allocation"] if mode != "simple"
                         else ())
        data = pattern(4096, 700, seed=len(mode))
        res = c.write(4096, data)
        check(res.error == 0, "%s: dribbled write: error %d" %
              (mode, res.error))
        res = c.read(4096, 700)
        check(res.error == 0 and res.data == data,
              "%s: dribbled read returned other bytes" % mode)
        check(c.request(CMD_FLUSH).error == 0, "dribbled flush failed")
        if mode != "simple":
            res = c.request(CMD_BLOCK_STATUS, 0, 65536)
            check(res.error == 0, "dribbled block status failed")
        c.close()


def packed_messages_are_served_in_order():
    c = srv.connect()
    c.greeting()
    flags = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES
    # Client flags, two options and GO in one send.
    blob = struct.pack(">I", flags)
    blob += struct.pack(">QII", IHAVEOPT, OPT_STRUCTURED_REPLY, 0)
    blob += struct.pack(">QII", IHAVEOPT, OPT_LIST, 0)
    gd = go_data()
    blob += struct.pack(">QII", IHAVEOPT, OPT_GO, len(gd)) + gd
    c.send(blob)
    check(c.option_reply(OPT_STRUCTURED_REPLY).type == REP_ACK,
          "STRUCTURED_REPLY not acknowledged")
    r = c.option_reply(OPT_LIST)
    while r.type == REP_SERVER:
        r = c.option_reply(OPT_LIST)
    check(r.type == REP_ACK, "LIST answered %s" % rep_name(r.type))
    r = c.option_reply(OPT_GO)
    infos = []
    while r.type == REP_INFO:
        infos.append(r)
        r = c.option_reply(OPT_GO)
    check(r.type == REP_ACK, "GO answered %s" % rep_name(r.type))
    c.structured = True
    c.size, c.tflags = c.parse_infos(infos)[INFO_EXPORT]
    # Requests with payloads back to back in one send, then reads of them.
    blob = b""
    cookies = []
    for i in range(20):
        off = 1 * MIB + i * 1000
        data = pattern(off, 1000, seed=i)
        ck = 100 + i
        blob += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, ck, off,
                            1000) + data
        c.pending[ck] = Result(ck, CMD_WRITE, off, 1000)
        c._read_cov[ck] = []
        cookies.append(ck)
    c.send(blob)
    for ck in cookies:
        check(c.reply(ck).error == 0, "packed write %d failed" % ck)
    for i in range(20):
        off = 1 * MIB + i * 1000
        res = c.read(off, 1000)
        check(res.data == pattern(off, 1000, seed=i),
              "packed write %d landed wrong" % i)
    c.close()


img = make_image("disk.raw", SIZE)
srv = Server(img, "-f", "raw", name="frag")
run(dribbled_session_works, packed_messages_are_served_in_order)
