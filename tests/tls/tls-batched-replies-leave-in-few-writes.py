#!/usr/bin/python3
"""Over TLS, replies that complete together leave together: 64 reads of
4 KiB sent in one go are answered with a handful of write system calls
(counted with strace), not one or more per reply, and every reply is
right."""

import os
import subprocess
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tlsraw import *  # noqa: E402,F401,F403

N = 64
MAX_WRITES = 8


def batched_replies_leave_in_few_writes():
    c = tls_client(srv, ctx)
    # Warm the page cache and the connection.
    check(c.read(0, 1 * MIB).error == 0, "warm-up read")

    trace = os.path.join(scratch(), "strace.out")
    st = subprocess.Popen(["strace", "-f", "-qq", "-o", trace,
                           "-e", "trace=write,writev,sendmsg,sendto",
                           "-p", str(srv.proc.pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(1.0)             # attached to every thread
    # All requests in one TLS record and one send.
    parts = []
    c.send = parts.append
    cookies = [c.send_request(CMD_READ, i * 16384, 4096) for i in range(N)]
    del c.send
    c.send(b"".join(parts))
    for i, cookie in enumerate(cookies):
        res = c.reply(cookie)
        check(res.error == 0 and res.data == pattern(i * 16384, 4096),
              "reply %d wrong" % i)
    time.sleep(0.3)
    st.terminate()
    st.wait()
    with open(trace) as f:
        writes = [l for l in f if "write" in l or "send" in l]
    print("%d replies in %d write calls" % (N, len(writes)))
    check(0 < len(writes) <= MAX_WRITES,
          "%d write calls for %d replies:\n%s" % (len(writes), N,
                                                  "".join(writes[:20])))
    c.close()


pki = make_pki()
ctx = client_context(pki)
img = make_image("disk.raw", 4 * MIB, pattern(0, 2 * MIB))
srv = tls_server(pki, img, "require", name="batch")
run(batched_replies_leave_in_few_writes)
