#!/usr/bin/python3
"""Fault injection on a raw export (DISKSERVE_FAULT): an injected EIO or
ENOSPC fails exactly the request that hit it, leaves the file untouched,
and the server keeps serving that client and others; after a failed
sync the export refuses writes with EIO but still serves reads.

Run by faults-fail-requests-not-server.sh: faults.py DISKSERVE SCRATCH
CRASH_REPLAY.
"""

import errno
import os
import subprocess
import sys
import time

import nbd

SIZE = 1 << 20


class Server:
    """diskserve on a fresh 1 MiB raw image with extra environment."""

    def __init__(self, binary, scratch, name, env):
        self.image = os.path.join(scratch, name + ".raw")
        self.sock = os.path.join(scratch, name + ".sock")
        self.logfile = os.path.join(scratch, name + ".log")
        with open(self.image, "wb") as f:
            f.truncate(SIZE)
        full = dict(os.environ)
        full.update(env)
        self.proc = subprocess.Popen(
            [binary, "-k", self.sock, "-f", "raw", self.image],
            env=full, stdout=subprocess.DEVNULL,
            stderr=open(self.logfile, "w"))
        for _ in range(200):
            if os.path.exists(self.sock):
                break
            if self.proc.poll() is not None:
                fail("%s: server exited early" % name)
            time.sleep(0.05)
        self.uri = "nbd+unix:///?socket=" + self.sock

    def client(self):
        h = nbd.NBD()
        h.connect_uri(self.uri)
        return h

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(timeout=20)
        if rc != 0:
            fail("server exited with %d" % rc)

    def log(self):
        with open(self.logfile) as f:
            return f.read()

    def file_bytes(self, off, n):
        with open(self.image, "rb") as f:
            f.seek(off)
            return f.read(n)


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def expect_error(what, want, fn, *args):
    try:
        fn(*args)
    except nbd.Error as e:
        if e.errnum != want:
            fail("%s: got %s (%s), want %s" % (
                what, errno.errorcode.get(e.errnum or 0), e,
                errno.errorcode[want]))
        return
    fail("%s succeeded, want %s" % (what, errno.errorcode[want]))


def pattern(n, tag):
    return bytes([tag]) * n


def data_faults(binary, scratch, replay):
    """DATA:3:EIO and DATA:5:ENOSPC: the third and fifth data writes
    fail, nothing else does."""
    log = os.path.join(scratch, "data.iolog")
    s = Server(binary, scratch, "data",
               {"DISKSERVE_FAULT": "DATA:3:EIO,DATA:5:ENOSPC",
                "DISKSERVE_IO_LOG": log})
    a = s.client()
    b = s.client()
    a.pwrite(pattern(4096, 1), 0)                       # data op 1
    b.pwrite(pattern(4096, 2), 4096)                    # data op 2

    # Op 3 fails with EIO while reads are in flight on the same
    # connection; they all complete.
    bufs = [nbd.Buffer(4096) for _ in range(4)]
    cookies = [a.aio_pread(bufs[i], i * 4096) for i in range(4)]
    expect_error("third data write", errno.EIO, a.pwrite,
                 pattern(4096, 3), 8192)
    while a.aio_in_flight() > 0:
        a.poll(-1)
    for c in cookies:
        if not a.aio_command_completed(c):
            fail("a read in flight beside the failed write did not "
                 "complete")
    if bytes(bufs[1].to_bytearray()) != pattern(4096, 2):
        fail("a read beside the failed write returned wrong data")
    if s.file_bytes(8192, 4096) != bytes(4096):
        fail("the failed write touched the file")

    b.pwrite(pattern(512, 4), 16384)                    # data op 4
    expect_error("fifth data write", errno.ENOSPC, b.pwrite,
                 pattern(512, 5), 20480)                # data op 5
    if s.file_bytes(20480, 512) != bytes(512):
        fail("the write refused with ENOSPC touched the file")
    a.pwrite(pattern(512, 6), 24576)                    # data op 6
    a.flush()
    b.flush()
    c = s.client()
    if c.pread(512, 24576) != pattern(512, 6) or \
            c.pread(4096, 0) != pattern(4096, 1):
        fail("a new client does not read what was written")
    for h in (a, b, c):
        h.shutdown()
    if not s.alive():
        fail("the server died")
    s.stop()
    if s.log().count("injected") != 2:
        fail("server log should name two injected faults:\n" + s.log())

    # The log has the two faults and no write records for them.
    dump = subprocess.run([replay, log, "--dump"], check=True,
                          capture_output=True, text=True).stdout
    kinds = [(line.split()[1], line) for line in dump.splitlines()]
    faults = [line for kind, line in kinds if kind == "fault"]
    writes = [line for kind, line in kinds if kind == "write"]
    if len(faults) != 2 or "Input/output error" not in faults[0] or \
            "No space left on device" not in faults[1]:
        fail("log should hold two fault records:\n" + dump)
    if len(writes) != 4 or any("off 8192 " in w or "off 20480 " in w
                               for w in writes):
        fail("log should hold exactly the four written data ranges:\n" +
             dump)
    print("data faults: EIO and ENOSPC failed only their requests")


def flush_fault(binary, scratch, spec, name, fua):
    """A failed sync (FLUSH tag) fails its request with EIO, and every
    later write on every connection, while reads go on."""
    s = Server(binary, scratch, name, {"DISKSERVE_FAULT": spec})
    a = s.client()
    b = s.client()
    a.pwrite(pattern(4096, 7), 0)
    if not fua:
        a.flush()                                       # sync 1 passes
        a.pwrite(pattern(4096, 8), 4096)
        expect_error("flush after injected sync fault", errno.EIO, a.flush)
    else:
        expect_error("FUA write with injected sync fault", errno.EIO,
                     a.pwrite, pattern(4096, 8), 4096, nbd.CMD_FLAG_FUA)
    expect_error("write after failed sync", errno.EIO, a.pwrite,
                 pattern(512, 9), 8192)
    expect_error("write on another connection", errno.EIO, b.pwrite,
                 pattern(512, 9), 8192)
    expect_error("zero after failed sync", errno.EIO, b.zero, 512, 8192)
    expect_error("trim after failed sync", errno.EIO, b.trim, 512, 8192)
    expect_error("flush after failed sync", errno.EIO, b.flush)
    c = s.client()
    if c.pread(4096, 0) != pattern(4096, 7) or \
            c.pread(4096, 4096) != pattern(4096, 8):
        fail("reads after the failed sync return wrong data")
    expect_error("write on a new connection", errno.EIO, c.pwrite,
                 pattern(512, 9), 8192)
    for h in (a, b, c):
        h.shutdown()
    if not s.alive():
        fail("the server died")
    s.stop()
    if "injected" not in s.log() or "refusing further writes" not in s.log():
        fail("server log should show the fault and the refusal:\n" + s.log())
    print("%s: the failed sync failed its request; writes refused after" %
          spec)


def lasting_fault(binary, scratch):
    """DATA:2+:ENOSPC: a full disk fails every later write; flushes and
    reads go on."""
    s = Server(binary, scratch, "full", {"DISKSERVE_FAULT": "DATA:2+:ENOSPC"})
    a = s.client()
    a.pwrite(pattern(512, 10), 0)
    for i in range(3):
        expect_error("write %d on a full disk" % i, errno.ENOSPC, a.pwrite,
                     pattern(512, 11), 512 * (i + 1))
    a.flush()
    if a.pread(1024, 0) != pattern(512, 10) + bytes(512):
        fail("reads on a full disk return wrong data")
    a.shutdown()
    s.stop()
    print("DATA:2+:ENOSPC: every write from the second on failed")


def bad_spec(binary, scratch):
    """A malformed DISKSERVE_FAULT stops the server before it serves."""
    image = os.path.join(scratch, "bad.raw")
    with open(image, "wb") as f:
        f.truncate(SIZE)
    for spec in ("DATA:0:EIO", "NOSUCH:1:EIO", "DATA:1:EWHAT", "DATA:1"):
        env = dict(os.environ, DISKSERVE_FAULT=spec)
        p = subprocess.run([binary, "-k", os.path.join(scratch, "bad.sock"),
                            "-f", "raw", image], env=env,
                           capture_output=True, text=True, timeout=20)
        if p.returncode != 2 or "DISKSERVE_FAULT" not in p.stderr:
            fail("DISKSERVE_FAULT=%s: exit %d, %r" % (spec, p.returncode,
                                                       p.stderr))
    print("malformed DISKSERVE_FAULT values are refused")


def main():
    binary, scratch, replay = sys.argv[1:4]
    bad_spec(binary, scratch)
    data_faults(binary, scratch, replay)
    flush_fault(binary, scratch, "FLUSH:2:EIO", "flush", False)
    flush_fault(binary, scratch, "FLUSH:1:ENOSPC", "fua", True)
    lasting_fault(binary, scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
