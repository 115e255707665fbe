#!/usr/bin/python3
"""A client that stalls in the handshake is dropped once the handshake
time limit passes (--handshake-timeout, 10 s by default), whether it sent
nothing, only its flags, or half an option; a client that reached
transmission in time is never dropped by that limit."""

import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

LIMIT = 2


def closed_within(c, low, high):
    """The server closes c between low and high seconds from now."""
    t0 = time.monotonic()
    junk = c.wait_closed(high + 5)
    took = time.monotonic() - t0
    check(junk == b"", "stalled client was sent %r" % junk[:40])
    check(low <= took <= high,
          "closed after %.1f s, limit %d s" % (took, LIMIT))


def silent_client_is_dropped():
    c = srv.connect()
    c.greeting()
    closed_within(c, LIMIT - 0.5, LIMIT + 3)


def client_stalling_after_flags_is_dropped():
    c = srv.connect()
    c.handshake()
    closed_within(c, LIMIT - 0.5, LIMIT + 3)


def client_stalling_mid_option_is_dropped():
    c = srv.connect()
    c.handshake()
    # Options answered in time do not reset the limit.
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    c.send(struct.pack(">QII", IHAVEOPT, OPT_GO, 100) + b"\0\0\0")
    closed_within(c, LIMIT - 1.5, LIMIT + 3)


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
    c = s.connect()
    c.greeting()
    t0 = time.monotonic()
    junk = c.wait_closed(20)
    took = time.monotonic() - t0
    check(junk == b"", "stalled client was sent %r" % junk[:40])
    check(9 <= took <= 13, "default limit dropped after %.1f s" % took)
    s.stop()


img = make_image("disk.raw", 4 * MIB)
srv = Server(img, "-f", "raw", "--handshake-timeout", str(LIMIT),
             name="timeout")
run(silent_client_is_dropped,
    client_stalling_after_flags_is_dropped,
    client_stalling_mid_option_is_dropped,
    transmission_outlives_the_limit,
    default_limit_is_ten_seconds)
