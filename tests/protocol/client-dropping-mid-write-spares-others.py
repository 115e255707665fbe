#!/usr/bin/python3
"""A client that sends a WRITE header and only part of its payload, then
disconnects (or sends the rest never), disturbs no one: other clients
keep reading and writing with correct data throughout, the half-received
write never reaches the disk, and new clients still connect."""

import os
import random
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 32 * MIB


def worker_round(c, rng, shadow):
    """One write + read-back at a random place of the worker's area."""
    off = 16 * MIB + rng.randrange(0, 8 * MIB // 4096) * 4096
    n = rng.choice((512, 4096, 65536))
    data = bytes(rng.getrandbits(8) for _ in range(16)) * (n // 16)
    res = c.write(off, data)
    check(res.error == 0, "bystander write at %d: error %d" %
          (off, res.error))
    shadow[off:off + n] = data
    res = c.read(off, n)
    check(res.error == 0 and res.data == data,
          "bystander read at %d returned other bytes" % off)


def half_written_payloads_are_dropped():
    seed = int(os.environ.get("DS_TEST_SEED", time.time()))
    print("seed %d (set DS_TEST_SEED to replay)" % seed)
    rng = random.Random(seed)
    shadow = bytearray(SIZE)
    bystander = srv.connect()
    bystander.connect_export(structured=True)
    before = bystander.read(0, 4 * MIB).data
    for i in range(12):
        mode = ("simple", "structured", "extended")[i % 3]
        c = srv.connect()
        c.connect_export(structured=mode == "structured",
                         extended=mode == "extended")
        length = rng.choice((4096, 1 * MIB, 4 * MIB, MAX_PAYLOAD))
        sent = rng.randrange(0, length)
        c.send_request(CMD_WRITE, 0, length, 0,
                       b"\xee" * sent, expect_reply=False)
        worker_round(bystander, rng, shadow)
        if i % 2:
            c.close()
        else:
            # Hang up from the other side: shut down writing only, then
            # let the server notice end of stream.
            c.sock.shutdown(socket.SHUT_WR)
            check(c.wait_closed(15) == b"",
                  "server replied to a write it never fully received")
            c.close()
        worker_round(bystander, rng, shadow)
    # None of the partial payloads reached the disk.
    after = bystander.read(0, 4 * MIB).data
    check(after == before, "a half-received write changed the export")
    # The bystander's own writes are all there.
    for off in range(16 * MIB, 24 * MIB, 4 * MIB):
        res = bystander.read(off, 4 * MIB)
        check(res.data == bytes(shadow[off:off + 4 * MIB]),
              "bystander data at %d lost" % off)
    bystander.close()


def new_clients_still_connect():
    for mode in ("simple", "extended"):
        c = srv.connect()
        c.connect_export(extended=mode == "extended")
        res = c.read(0, 4096)
        check(res.error == 0 and res.data == pattern(0, 4096),
              "new %s client read failed" % mode)
        c.disconnect()
        check(c.wait_closed(15) == b"", "DISC answered")


img = make_image("disk.raw", SIZE, pattern(0, 4 * MIB))
srv = Server(img, "-f", "raw", name="midwrite")
run(half_written_payloads_are_dropped,
    new_clients_still_connect)
