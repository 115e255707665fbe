#!/usr/bin/python3
"""Over TLS, a client that pipelines many large reads and reads the
replies slowly gets every byte right and in full, while the server holds
back replies it has not encrypted yet; another TLS client meanwhile gets
its reads answered promptly."""

import os
import random
import sys
import threading

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tlsraw import *  # noqa: E402,F401,F403

SEED = int(os.environ.get("DS_SEED") or
           random.SystemRandom().randrange(1 << 32))
print("seed %d (replay with DS_SEED=%d)" % (SEED, SEED))
rng = random.Random(SEED)


def slow_reader_gets_everything_and_others_are_served():
    slow = tls_client(srv, ctx)
    reqs = []
    parts = []
    slow.send = parts.append
    for _ in range(48):
        length = rng.choice((4096, 65536, 1 << 20, 4 << 20))
        off = rng.randrange(0, SIZE - length + 1, 4096)
        flags = rng.choice((0, CMD_FLAG_DF))
        reqs.append((slow.send_request(CMD_READ, off, length, flags),
                     off, length))
    del slow.send
    slow.send(b"".join(parts))
    time.sleep(1.0)             # replies pile up unread

    lat = []
    def other():
        c = tls_client(srv, ctx)
        for _ in range(20):
            t0 = time.monotonic()
            off = rng.randrange(0, SIZE - 4096, 4096)
            res = c.read(off, 4096)
            lat.append(time.monotonic() - t0)
            check(res.error == 0 and res.data == data[off:off + 4096],
                  "other client: wrong data")
        c.close()
    t = threading.Thread(target=other)
    t.start()
    t.join(30)
    check(not t.is_alive() and len(lat) == 20, "other client stalled")
    check(max(lat) < 2, "other client waited %.1f s" % max(lat))

    slow.sock.settimeout(IO_TIMEOUT)
    for cookie, off, length in reqs:
        res = slow.reply(cookie)
        check(res.error == 0, "read error %d" % res.error)
        check(res.data == data[off:off + length],
              "read of %d at %d: wrong data" % (length, off))
        time.sleep(0.01)
    slow.close()


SIZE = 32 * MIB
pki = make_pki()
ctx = client_context(pki)
data = bytearray(rng.randbytes(SIZE))
data[8 * MIB:12 * MIB] = bytes(4 * MIB)     # holes for OFFSET_HOLE chunks
data = bytes(data)
img = make_image("disk.raw", SIZE, data)
srv = tls_server(pki, img, "require", name="slow")
run(slow_reader_gets_everything_and_others_are_served)
