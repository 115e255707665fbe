"""TLS for the raw protocol tests: certificates made by tls-functions.sh
in the scratch directory, and STARTTLS with Python's ssl module wrapping
an nbdraw connection (its send/recv methods then go through TLS).

Python's ssl module has no PSK client before 3.13: PSK is tested with
libnbd's tools instead (tls-refuses-wrong-psk.sh).
"""

import os
import socket
import ssl
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "protocol"))
from nbdraw import *  # noqa: E402,F401,F403


def make_pki():
    """Run make_pki from tls-functions.sh; returns the pki directory."""
    d = scratch()
    subprocess.run(["/bin/bash", "-c",
                    'set -eu; fail() { echo "FAIL: $*" >&2; exit 1; }; '
                    'require() { :; }; T=$1; . "$2"; make_pki',
                    "make_pki", d, os.path.join(HERE, "tls-functions.sh")],
                   check=True)
    return os.path.join(d, "pki")


def client_context(pki, who="client"):
    """A TLS 1.2+ client context trusting who's CA, with who's
    certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(os.path.join(pki, who, "ca-cert.pem"))
    ctx.load_cert_chain(os.path.join(pki, who, "client-cert.pem"),
                        os.path.join(pki, who, "client-key.pem"))
    return ctx


def starttls(c, ctx):
    """NBD_OPT_STARTTLS, then the TLS handshake over c's socket."""
    c.expect_option(OPT_STARTTLS, REP_ACK)
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    c.sock.settimeout(IO_TIMEOUT)


def tls_server(pki, img, tls, *args, name):
    """diskserve serving the raw image img with --tls=tls and the server
    certificates from pki; args follow those options."""
    return Server(img, "-f", "raw", "--tls=" + tls, "--tls-certificates",
                  os.path.join(pki, "server"), *args, name=name)


def tls_client(srv, ctx):
    """A client of srv through STARTTLS, with structured replies, in
    transmission on the default export."""
    c = srv.connect()
    c.handshake()
    starttls(c, ctx)
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    c.structured = True
    final, _ = c.go(b"")
    check(final.type == REP_ACK, "GO: %r" % final)
    return c


def client_hello(ctx):
    """The bytes of a real ClientHello, made without a socket."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def closed_soon(c, timeout):
    """The server closes c within timeout seconds; what it sent first
    (an alert, perhaps) does not matter."""
    sock = c.sock
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        check(left > 0, "connection still open after %.1f s" % timeout)
        sock.settimeout(left)
        try:
            b = sock.recv(65536)
        except socket.timeout:      # an OSError too: test it first
            continue
        except (ConnectionResetError, ssl.SSLError, OSError):
            return
        if not b:
            return
