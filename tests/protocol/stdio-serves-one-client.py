#!/usr/bin/python3
"""diskserve -s serves one client over its stdin and stdout, whether they
are one socket (a socketpair) or two pipes: the full fixed newstyle
handshake, reads and writes in every reply mode, then NBD_CMD_DISC or end
of input, after which the process exits with status 0."""

import os
import select
import socket
import subprocess
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 4 * MIB


class PipePair:
    """A socket-like object over two pipes, enough for Conn."""

    def __init__(self, rfd, wfd):
        self.rfd, self.wfd = rfd, wfd
        self.timeout = None

    def settimeout(self, t):
        self.timeout = t

    def sendall(self, data):
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]

    def recv(self, n, flags=0):
        r, _, _ = select.select([self.rfd], [], [], self.timeout)
        if not r:
            raise socket.timeout()
        return os.read(self.rfd, n)

    def shutdown(self, how):
        os.close(self.wfd)
        self.wfd = -1

    def close(self):
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                os.close(fd)
        self.rfd = self.wfd = -1


def spawn(transport, *extra):
    """Start diskserve -s (with extra options) on a socketpair or two
    pipes; returns (process, Conn, log path)."""
    log_path = os.path.join(scratch(), "stdio-%s.log" % transport)
    log = open(log_path, "wb")
    argv = [diskserve_path(), "-s", "-f", "raw"] + list(extra) + [img]
    if transport == "socketpair":
        ours, theirs = socket.socketpair()
        p = subprocess.Popen(argv, stdin=theirs, stdout=theirs, stderr=log)
        theirs.close()
        return p, Conn(ours), log_path
    to_srv_r, to_srv_w = os.pipe()
    from_srv_r, from_srv_w = os.pipe()
    p = subprocess.Popen(argv, stdin=to_srv_r, stdout=from_srv_w, stderr=log)
    os.close(to_srv_r)
    os.close(from_srv_w)
    return p, Conn(PipePair(from_srv_r, to_srv_w)), log_path


def exits_cleanly(p, log_path, how):
    try:
        rc = p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError("diskserve -s still running 15 s after %s" %
                             how)
    with open(log_path, "rb") as f:
        log = f.read().decode(errors="replace")
    check(rc == 0, "diskserve -s exited with %d after %s:\n%s" %
          (rc, how, log))


def session(transport, mode, end):
    p, c, log_path = spawn(transport)
    try:
        c.connect_export(structured=mode == "structured",
                         extended=mode == "extended")
        check(c.size == SIZE, "size %d" % c.size)
        res = c.read(0, 64 * 1024)
        check(res.error == 0 and res.data == pattern(0, 64 * 1024),
              "%s/%s: read returned other bytes" % (transport, mode))
        data = pattern(1 * MIB, 1 * MIB, seed=0xabc)
        check(c.write(1 * MIB, data).error == 0, "write failed")
        check(c.request(CMD_FLUSH).error == 0, "flush failed")
        res = c.read(1 * MIB, 1 * MIB)
        check(res.data == data, "%s/%s: write not read back" %
              (transport, mode))
        if end == "disc":
            c.disconnect()
            check(c.wait_closed(15) == b"", "DISC answered")
        else:
            c.sock.shutdown(socket.SHUT_WR)
            check(c.wait_closed(15) == b"", "end of input answered")
        exits_cleanly(p, log_path, end)
    finally:
        c.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    # Put the test area back for the next session.
    with open(img, "r+b") as f:
        f.seek(1 * MIB)
        f.write(pattern(1 * MIB, 1 * MIB))


def socketpair_sessions():
    for mode, end in (("simple", "disc"), ("structured", "eof"),
                      ("extended", "disc")):
        session("socketpair", mode, end)


def pipe_sessions():
    for mode, end in (("simple", "eof"), ("structured", "disc"),
                      ("extended", "eof")):
        session("pipes", mode, end)


def stalled_stdio_client_times_out():
    p, c, log_path = spawn("socketpair", "--handshake-timeout", "1")
    try:
        c.greeting()
        check(c.wait_closed(10) == b"", "stalled client was sent data")
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            raise AssertionError("diskserve -s kept running after dropping "
                                 "its only client")
    finally:
        c.close()
        if p.poll() is None:
            p.kill()
            p.wait()


img = make_image("disk.raw", SIZE, pattern(0, SIZE))
run(socketpair_sessions, pipe_sessions, stalled_stdio_client_times_out)
