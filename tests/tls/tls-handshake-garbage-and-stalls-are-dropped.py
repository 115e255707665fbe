#!/usr/bin/python3
"""A client that sends garbage inside the TLS handshake is dropped at
once; one that stalls part way through it (after half a ClientHello, or
after a whole one) is dropped when the handshake time limit passes,
which STARTTLS does not reset; meanwhile, and afterwards, other clients
negotiate TLS and read data, also at the negotiating-client cap."""

import os
import random
import struct
import sys
import threading

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tlsraw import *  # noqa: E402,F401,F403

LIMIT = 2
SEED = int(os.environ.get("DS_SEED") or random.SystemRandom().randrange(1 << 32))
print("seed %d (replay with DS_SEED=%d)" % (SEED, SEED))
rng = random.Random(SEED)


def good_client_reads():
    c = tls_client(srv, ctx)
    res = c.read(65536, 65536)
    check(res.error == 0 and res.data == pattern(65536, 65536), "read")
    c.close()


def dropped_quickly(payload, what):
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_STARTTLS, REP_ACK)
    t0 = time.monotonic()
    try:
        c.send(payload)
    except Closed:
        pass
    closed_soon(c, LIMIT - 0.5)
    took = time.monotonic() - t0
    check(took < LIMIT - 0.5, "%s: dropped after %.1f s" % (what, took))


def garbage_inside_the_handshake_is_dropped():
    before = srv.log_text().count("TLS handshake failed")
    # More than the largest record, so that whatever length the first
    # bytes announce, a whole record of garbage arrives.
    dropped_quickly(rng.randbytes(40000), "random bytes")
    # A handshake record header announcing more than a record may hold.
    dropped_quickly(b"\x16\x03\x01\xff\xff" + rng.randbytes(100),
                    "oversized record")
    # A real ClientHello, then garbage where the client's Finished goes.
    dropped_quickly(client_hello(ctx) + b"\x16\x03\x03\x00\x20" +
                    rng.randbytes(32), "garbage after ClientHello")
    # An application-data record before any handshake.
    dropped_quickly(b"\x17\x03\x03\x00\x10" + rng.randbytes(16),
                    "data before the handshake")
    good_client_reads()
    after = srv.log_text().count("TLS handshake failed")
    check(after - before >= 4, "%d handshake failures logged" %
          (after - before))


def staller(payload):
    """Connect, STARTTLS, send payload, stall.  Returns (conn, t0)."""
    t0 = time.monotonic()
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_STARTTLS, REP_ACK)
    c.send(payload)
    return c, t0


def stalled_clients_are_timed_out_and_others_unaffected():
    hello = client_hello(ctx)
    stallers = [staller(hello[:len(hello) // 2]), staller(hello)]
    # The cap is 3: two stall, and good clients still get through, one
    # after another, while the stallers wait out their limit.
    t_end = time.monotonic() + LIMIT - 0.5
    n = 0
    while time.monotonic() < t_end:
        good_client_reads()
        n += 1
    check(n >= 2, "only %d good clients during the stall" % n)
    for c, t0 in stallers:
        closed_soon(c, LIMIT + 5)
        took = time.monotonic() - t0
        check(LIMIT - 0.05 <= took <= LIMIT + 5,
              "staller dropped after %.1f s, limit %d s" % (took, LIMIT))
    check(srv.log_text().count("handshake not finished") >= 2,
          "timeouts not logged")
    # With the stallers gone, three clients can negotiate at once.
    errors = []

    def one():
        try:
            good_client_reads()
        except Exception as e:   # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=one) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errors, "concurrent clients failed: %r" % errors)


pki = make_pki()
ctx = client_context(pki)
img = make_image("disk.raw", 4 * MIB, pattern(0, 1 * MIB))
srv = tls_server(pki, img, "require", "--handshake-timeout", str(LIMIT),
                 "--max-negotiating", "3", name="tls")
run(garbage_inside_the_handshake_is_dropped,
    stalled_clients_are_timed_out_and_others_unaffected)
