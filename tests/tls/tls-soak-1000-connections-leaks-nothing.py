#!/usr/bin/python3
"""1,000 TLS connections, up to 8 open at a time, each dropped by the
client at a random point: before or inside the TLS handshake, after it,
after GO, in the middle of a write payload, with read replies it never
reads, or with a clean disconnect.  The server's resident memory and
open file descriptors come back to what they were after the first 200
and a burst of the most memory any point can hold (the request pool
keeps buffers up to its high-water mark: that is not a leak), every
client after the soak is served, and the server exits cleanly (under
ASan, LeakSanitizer checks the exit: run() fails on its report)."""

import os
import random
import socket
import struct
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tlsraw import *  # noqa: E402,F401,F403

N = 1000
WARMUP = 200
SEED = int(os.environ.get("DS_SEED") or
           random.SystemRandom().randrange(1 << 32))
print("seed %d (replay with DS_SEED=%d)" % (SEED, SEED))
rng = random.Random(SEED)


def status(field):
    with open("/proc/%d/status" % srv.proc.pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s" % field)


def n_fds():
    return len(os.listdir("/proc/%d/fd" % srv.proc.pid))


def tls_conn(structured=True):
    c = srv.connect()
    c.handshake()
    starttls(c, ctx)
    if structured:
        c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
        c.structured = True
    return c


def open_and_drop(point, unread=None):
    """One connection left at point; returns it (still open) or None."""
    if point == 0:
        return srv.connect()
    if point == 1:
        c = srv.connect()
        c.handshake()
        return c
    if point == 2:
        c = srv.connect()
        c.handshake()
        c.expect_option(OPT_STARTTLS, REP_ACK)
        return c
    if point in (3, 4):
        c = srv.connect()
        c.handshake()
        c.expect_option(OPT_STARTTLS, REP_ACK)
        hello = hellos[rng.randrange(len(hellos))]
        c.send(hello[:rng.randrange(1, len(hello))] if point == 3 else hello)
        return c
    c = tls_conn()
    if point == 5:
        return c
    final, _ = c.go(b"")
    check(final.type == REP_ACK, "GO: %r" % final)
    if point == 6:
        return c
    if point == 7:
        # Reads whose replies are never read: ciphertext left queued.
        n = rng.randrange(1, 16) if unread is None else unread
        for i in range(n):
            c.send_request(CMD_READ, rng.randrange(16) * 65536, 262144)
        return c
    if point == 8:
        # Half a write payload.
        c.send(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 99,
                           0, 65536) + b"w" * rng.randrange(1, 65536))
        return c
    res = c.read(rng.randrange(64) * 4096, 4096)
    check(res.error == 0, "read")
    c.disconnect()
    return c


def drop(c):
    try:
        if rng.random() < 0.5:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              struct.pack("ii", 1, 0))   # a reset
    except OSError:
        pass
    c.sock.close()


def soak_leaves_memory_and_descriptors_flat():
    opened = []
    base_rss = base_fds = None
    for i in range(N):
        if i == WARMUP:
            for c in opened:
                drop(c)
            # The high-water mark: 8 clients with 15 reads each unread.
            burst = [open_and_drop(7, 15) for _ in range(8)]
            time.sleep(1.0)
            for c in burst:
                drop(c)
            opened = []
            time.sleep(0.5)
            base_rss, base_fds = status("VmRSS"), n_fds()
        opened.append(open_and_drop(rng.randrange(10)))
        if len(opened) > 8:
            drop(opened.pop(rng.randrange(len(opened))))
    for c in opened:
        drop(c)
    # Let the server see every close.
    deadline = time.monotonic() + 15
    while n_fds() > base_fds and time.monotonic() < deadline:
        time.sleep(0.1)
    rss, fds = status("VmRSS"), n_fds()
    print("RSS after %d: %d KiB, after %d: %d KiB; fds %d -> %d" %
          (WARMUP, base_rss, N, rss, base_fds, fds))
    check(fds <= base_fds, "file descriptors grew: %d -> %d" %
          (base_fds, fds))
    check(rss - base_rss < 4096, "RSS grew by %d KiB" % (rss - base_rss))
    c = tls_conn()
    final, _ = c.go(b"")
    check(final.type == REP_ACK, "GO after the soak: %r" % final)
    res = c.read(0, 65536)
    check(res.error == 0 and res.data == pattern(0, 65536), "read after")
    c.close()


# Under ASan (make check-sanitizers sets ASAN_OPTIONS) freed memory waits
# in a quarantine, which would read as growth: turn it off, and leave the
# leak check to LeakSanitizer at exit.
if "ASAN_OPTIONS" in os.environ:
    os.environ["ASAN_OPTIONS"] += ":quarantine_size_mb=0"
pki = make_pki()
ctx = client_context(pki)
hellos = [client_hello(ctx) for _ in range(4)]
img = make_image("disk.raw", 4 * MIB, pattern(0, 1 * MIB))
srv = tls_server(pki, img, "require", name="soak")
run(soak_leaves_memory_and_descriptors_flat)
