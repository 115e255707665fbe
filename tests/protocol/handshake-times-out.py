#!/usr/bin/python3
"""A client that stalls in the handshake is dropped once the handshake
time limit passes (--handshake-timeout, 10 s by default), whether it sent
nothing, only its flags, or half an option; a client that reached
transmission in time is never dropped by that limit."""

import os
import struct
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

LIMIT = 2


def closed_in_time(c, t0, limit):
    """The server closes c no sooner than limit seconds after t0 (taken
    before connecting, so before the server's clock started) and not
    much later."""
    junk = c.wait_closed(limit + 10)
    took = time.monotonic() - t0
    check(junk == b"", "stalled client was sent %r" % junk[:40])
    check(limit - 0.05 <= took <= limit + 5,
          "closed after %.1f s, limit %d s" % (took, limit))


def silent_client_is_dropped():
    t0 = time.monotonic()
    c = srv.connect()
    c.greeting()
    closed_in_time(c, t0, LIMIT)


def client_stalling_after_flags_is_dropped():
    t0 = time.monotonic()
    c = srv.connect()
    c.handshake()
    closed_in_time(c, t0, LIMIT)


def client_stalling_mid_option_is_dropped():
    t0 = time.monotonic()
    c = srv.connect()
    c.handshake()
    # Options answered in time do not reset the limit.
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    c.send(struct.pack(">QII", IHAVEOPT, OPT_GO, 100) + b"\0\0\0")
    closed_in_time(c, t0, LIMIT)


def transmission_outlives_the_limit():
    c = srv.connect()
    c.connect_export(structured=True)
    time.sleep(LIMIT + 1.5)
    check(c.is_open(0.1), "client in transmission was dropped")
    res = c.read(0, 4096)
    check(res.error == 0, "read after the limit: error %d" % res.error)
    c.close()


def default_limit_is_ten_seconds():
    s = Server(img, "-f", "raw", name="default")
    t0 = time.monotonic()
    c = s.connect()
    c.greeting()
    closed_in_time(c, t0, 10)
    check(s.stop() == 0, "server did not stop cleanly")


img = make_image("disk.raw", 4 * MIB)
srv = Server(img, "-f", "raw", "--handshake-timeout", str(LIMIT),
             name="timeout")
run(silent_client_is_dropped,
    client_stalling_after_flags_is_dropped,
    client_stalling_mid_option_is_dropped,
    transmission_outlives_the_limit,
    default_limit_is_ten_seconds)
