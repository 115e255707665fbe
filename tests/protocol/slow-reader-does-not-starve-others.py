#!/usr/bin/python3
"""A client that pipelines large reads and never reads the replies holds
back only itself: other clients still negotiate, read and write promptly
while it sits there, and once it goes away the server is fully usable.
(The server's buffer budget is shared; one connection must not be able
to take all of it.)"""

import os
import socket
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 64 * MIB
# Seconds a bystander's request may take while the hog sits there; a
# healthy server answers in milliseconds.
PROMPT = 5


def flood(c, want):
    """Pipeline up to want 32 MiB reads without reading any reply; stop
    early once the server stops taking requests.  Returns how many went
    out."""
    c.sock.settimeout(2)
    sent = 0
    try:
        for _ in range(want):
            c.send_request(CMD_READ, 0, MAX_PAYLOAD)
            sent += 1
    except (socket.timeout, TimeoutError):
        pass
    c.sock.settimeout(IO_TIMEOUT)
    return sent


def bystander_round(label):
    t0 = time.monotonic()
    b = srv.connect()
    b.sock.settimeout(PROMPT)
    b.connect_export(structured=True)
    data = pattern(8 * MIB, 65536, seed=int(t0))
    res = b.write(8 * MIB, data)
    check(res.error == 0, "%s: bystander write: error %d" %
          (label, res.error))
    res = b.read(8 * MIB, 65536)
    check(res.error == 0 and res.data == data,
          "%s: bystander read returned other bytes" % label)
    took = time.monotonic() - t0
    check(took < PROMPT, "%s: bystander took %.1f s" % (label, took))
    b.close()


def hog_does_not_block_bystanders():
    hogs = []
    for mode in ("structured", "simple"):
        h = srv.connect()
        h.connect_export(structured=mode == "structured")
        sent = flood(h, 128)
        print("%s hog pipelined %d reads of 32 MiB" % (mode, sent))
        hogs.append(h)
        try:
            bystander_round("with a %s hog" % mode)
        except (ProtocolError, TimeoutError, socket.timeout) as e:
            raise AssertionError("bystander stalled behind a client that "
                                 "does not read its replies: %s" % e)
    for h in hogs:
        h.close()
    # Gone: everything back to normal.
    time.sleep(0.5)
    bystander_round("after the hogs left")


img = make_image("disk.raw", SIZE, pattern(0, SIZE))
srv = Server(img, "-f", "raw", name="hog")
run(hog_does_not_block_bystanders)
