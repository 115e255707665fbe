#!/usr/bin/python3
"""Over TCP, a write too big even to read and drop (over twice the 32
MiB limit) is refused with an error reply, and that reply and the 8 MiB
of read replies pipelined ahead of it all reach the client, which reads
them only after a pause, before the connection ends cleanly.  The
server leaves the refused payload unread: closing a TCP socket with
unread input sends a reset, and a reset throws away whatever the server
had queued but not yet sent, so the server shuts down its sending side
once the replies are written and closes only when the client has closed
(or after a bounded wait).  (It once closed at once, and the client lost
the end of the replies.)  requests-too-big-get-reply-before-close.py
covers the reply modes and lengths over a Unix socket."""

import os
import socket
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 64 * MIB
DATA = 8 * MIB
# The most of a refused payload the server reads and drops to keep the
# connection (server/request.c, DISCARD_MAX).
DISCARD_MAX = 2 * MAX_PAYLOAD


def refused_write_over_tcp_loses_no_reply():
    for mode in ("simple", "structured", "extended"):
        what = "%s replies" % mode
        c = tcp_connect(port, srv)
        c.connect_export(structured=mode == "structured",
                         extended=mode == "extended")
        names = {}
        for i in range(8):
            names[c.send_request(CMD_READ, i * MIB, MIB)] = "read %d" % i
        # The header and the first 64 KiB of the payload it announces,
        # left unread in the server's socket.
        big = c.send_request(CMD_WRITE, 0, DISCARD_MAX + 1, 0,
                             b"\xab" * 65536)
        names[big] = "refused write"
        time.sleep(1)   # the server has written all it will by now
        try:
            while c.pending:
                c.read_message()
        except Closed as e:
            missing = ", ".join(sorted(names[k] for k in c.pending))
            raise AssertionError("%s: connection closed (%s) without the "
                                 "replies to: %s" % (what, e, missing))
        res = {names[k]: c.reply(k) for k in list(c.done)}
        check(res["refused write"].error != 0,
              "%s: the refused write succeeded" % what)
        for i in range(8):
            r = res["read %d" % i]
            check(r.error == 0 and r.data == pattern(i * MIB, MIB),
                  "%s: read %d failed or read wrong data" % (what, i))
        junk = c.wait_closed(15)
        check(junk == b"", "%s: %d bytes after the replies" %
              (what, len(junk)))
        c.close()
        print("%s: every reply arrived" % what)
    # The server serves on.
    other = tcp_connect(port, srv)
    other.connect_export()
    check(other.read(0, 4096).data == pattern(0, 4096),
          "the server no longer serves")
    other.close()


img = make_image("disk.raw", SIZE, pattern(0, DATA))
port = free_tcp_port()
srv = Server(img, "-f", "raw", "-b", "127.0.0.1", "-p", str(port),
             name="bigtcp")
run(refused_write_over_tcp_loses_no_reply)
