#!/usr/bin/python3
"""A client that pipelines requests and then shuts down its sending side
(shutdown(SHUT_WR)) still gets a complete, correct reply to every request
it sent, over a Unix socket and over TCP, with simple, structured and
extended replies: the server finishes and writes everything already
received before it closes.  That holds for 8 MiB of reads mixed with
writes and a flush, and for more small reads than the server keeps in
flight at once, so some of them are read only after the end of stream.
(The server once closed on the end of stream at once, dropping replies
still queued or being written: a 1 MiB read came back empty or cut.)"""

import os
import socket
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 32 * MIB
DATA = 8 * MIB          # pattern data at [0, DATA)
WRITE_AT = 16 * MIB     # where each round's writes go
MANY = 300              # more than the server's 256 requests in flight


def transports():
    yield "unix", srv.connect
    yield "tcp", lambda: tcp_connect(port, srv)


def modes():
    yield "simple", dict()
    yield "structured", dict(structured=True)
    yield "extended", dict(extended=True)


def read_all_after_half_close(c, names, what):
    """Shut down our sending side, then read every reply and the end of
    stream; returns {name: Result}."""
    c.sock.shutdown(socket.SHUT_WR)
    try:
        while c.pending:
            c.read_message()
    except Closed as e:
        missing = sorted(names[k] for k in c.pending)
        raise AssertionError("%s: connection closed (%s) without %d "
                             "replies: %s" % (what, e, len(missing),
                                              ", ".join(missing[:10])))
    res = {names[k]: c.reply(k) for k in list(c.done)}
    junk = c.wait_closed(15)
    check(junk == b"", "%s: %d bytes after the replies" % (what, len(junk)))
    c.close()
    return res


def big_reads_writes_and_flush(round_no, transport, connect, mode, kw):
    what = "%s, %s replies, big reads" % (transport, mode)
    c = connect()
    c.connect_export(**kw)
    names = {}
    for i in range(8):
        names[c.send_request(CMD_READ, i * MIB, MIB)] = "read %d" % i
    writes = []
    for i in range(3):
        off = WRITE_AT + (round_no * 4 + i) * 65536
        data = pattern(off, 65536, seed=0x5e1f + round_no)
        writes.append((off, data))
        names[c.send_request(CMD_WRITE, off, len(data), 0, data)] = \
            "write %d" % i
    names[c.send_request(CMD_FLUSH)] = "flush"
    res = read_all_after_half_close(c, names, what)
    for i in range(8):
        r = res["read %d" % i]
        check(r.error == 0, "%s: read %d: error %d" % (what, i, r.error))
        check(r.data == pattern(i * MIB, MIB),
              "%s: read %d returned wrong data (%d bytes)" %
              (what, i, len(r.data or b"")))
    for i in range(3):
        check(res["write %d" % i].error == 0, "%s: write %d failed" %
              (what, i))
    check(res["flush"].error == 0, "%s: flush failed" % what)
    other = srv.connect()
    other.connect_export()
    for off, data in writes:
        check(other.read(off, len(data)).data == data,
              "%s: write at %d is not on the disk" % (what, off))
    other.close()


def more_requests_than_in_flight(transport, connect, mode, kw):
    what = "%s, %s replies, %d small reads" % (transport, mode, MANY)
    c = connect()
    c.connect_export(**kw)
    names = {}
    for i in range(MANY):
        names[c.send_request(CMD_READ, i * 4096, 4096)] = "read %d" % i
    res = read_all_after_half_close(c, names, what)
    for i in range(MANY):
        r = res["read %d" % i]
        check(r.error == 0 and r.data == pattern(i * 4096, 4096),
              "%s: read %d failed or returned wrong data" % (what, i))


def half_closed_client_gets_every_reply():
    n = 0
    for transport, connect in transports():
        for mode, kw in modes():
            big_reads_writes_and_flush(n, transport, connect, mode, kw)
            more_requests_than_in_flight(transport, connect, mode, kw)
            n += 1
            print("%s, %s: every reply arrived" % (transport, mode))


img = make_image("disk.raw", SIZE, pattern(0, DATA))
port = free_tcp_port()
srv = Server(img, "-f", "raw", "-b", "127.0.0.1", "-p", str(port),
             name="hc")
run(half_closed_client_gets_every_reply)
