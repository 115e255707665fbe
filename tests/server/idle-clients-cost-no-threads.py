#!/usr/bin/python3
"""Claim: connections cost memory, not threads.  500 clients that finish
the handshake and sit idle add no thread to the server and under 16 KiB
each of resident memory and of allocated (VmData) memory, touched or
not; a further client is served normally meanwhile.
"""
import os
import resource
import subprocess
import sys
import tempfile
import time

import nbd

N = 500
top = os.environ.get("abs_top_builddir", ".")

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


with tempfile.TemporaryDirectory() as tmp:
    img = os.path.join(tmp, "disk.img")
    sock = os.path.join(tmp, "s.sock")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    srv = subprocess.Popen([os.path.join(top, "diskserve"), "-k", sock,
                            "-e", str(N + 10), "--max-negotiating",
                            str(N + 10), img])
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        first = nbd.NBD()
        first.connect_unix(sock)
        first.pread(4096, 0)
        time.sleep(0.2)
        threads0 = status(srv.pid, "Threads")
        rss0 = status(srv.pid, "VmRSS")
        data0 = status(srv.pid, "VmData")

        handles = []
        for i in range(N):
            h = nbd.NBD()
            h.connect_unix(sock)
            handles.append(h)
        time.sleep(0.5)
        threads1 = status(srv.pid, "Threads")
        rss1 = status(srv.pid, "VmRSS")
        data1 = status(srv.pid, "VmData")
        per = (rss1 - rss0) * 1024 / N
        per_data = (data1 - data0) * 1024 / N
        print(f"threads {threads0} -> {threads1}, "
              f"rss {rss0} KiB -> {rss1} KiB ({per:.0f} bytes per client), "
              f"data {data0} KiB -> {data1} KiB ({per_data:.0f} bytes "
              f"per client)")
        if threads1 != threads0:
            sys.exit("FAIL: idle clients added threads")
        if per > 16 * 1024:
            sys.exit("FAIL: more than 16 KiB resident per idle client")
        if per_data > 16 * 1024:
            sys.exit("FAIL: more than 16 KiB allocated per idle client")

        other = nbd.NBD()
        other.connect_unix(sock)
        other.pwrite(b"x" * 4096, 8192)
        if other.pread(4096, 8192) != b"x" * 4096:
            sys.exit("FAIL: a client among the idle ones was not served")
        other.shutdown()
        for h in handles:
            h.shutdown()
        first.shutdown()
    finally:
        srv.terminate()
        rc = srv.wait(timeout=30)
    if rc != 0:
        sys.exit(f"FAIL: server exit status {rc}")
print("ok")
