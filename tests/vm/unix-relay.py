#!/usr/bin/python3
"""unix-relay.py SOCKET LOG: relay standard input and output to a Unix
socket.

qemu's user networking runs this once per guest connection to a guestfwd
address ("guestfwd=tcp:ADDR:PORT-cmd:..."), with the guest's TCP stream as
descriptors 0, 1 and 2.  Connecting only then, rather than through a
chardev that qemu opens at start-up, means the server sees the client when
the guest really connects, so no handshake sits idle while the guest boots.
Errors go to LOG, never to descriptor 2, which is the guest's stream.
"""

import os
import select
import socket
import sys

CHUNK = 256 * 1024


class Pipe:
    """One direction: bytes read from src and not yet written to dst."""

    def __init__(self, src, dst):
        self.src = src
        self.dst = dst
        self.buf = bytearray()
        self.eof = False
        self.shut = False

    def done(self):
        return self.eof and not self.buf


def shut_write(fd):
    """Half-close FD's sending side, if it is a socket."""
    try:
        socket.socket(fileno=os.dup(fd)).shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    sys.stderr = open(sys.argv[2], "a", encoding="utf-8")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.connect(sys.argv[1])
    for fd in (0, 1, server.fileno()):
        os.set_blocking(fd, False)
    # Never block on one side while the other waits to be read: a server
    # that stops reading until its replies drain would deadlock a relay
    # stuck in a write.
    pipes = [Pipe(0, server.fileno()), Pipe(server.fileno(), 1)]
    while not all(p.done() for p in pipes):
        rlist = [p.src for p in pipes if not p.eof and len(p.buf) < CHUNK]
        wlist = [p.dst for p in pipes if p.buf]
        readable, writable, _ = select.select(rlist, wlist, [])
        for p in pipes:
            if p.buf and p.dst in writable:
                del p.buf[:os.write(p.dst, p.buf)]
            if p.src in readable:
                data = os.read(p.src, CHUNK)
                p.buf += data
                p.eof = not data
            if p.done() and not p.shut:
                shut_write(p.dst)
                p.shut = True


if __name__ == "__main__":
    main()
