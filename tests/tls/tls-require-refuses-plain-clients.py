#!/usr/bin/python3
"""With --tls=require (the spec's FORCEDTLS), a client that has not
started TLS gets NBD_REP_ERR_TLS_REQD for every option but STARTTLS and
ABORT, learns no export name from LIST, and is disconnected if it sends
EXPORT_NAME; after STARTTLS the same options work.  With --tls=on
(SELECTIVETLS), plain clients are served, except on exports marked
tls-only, which LIST hides from them and whose meta contexts they
cannot list."""

import os
import struct
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tlsraw import *  # noqa: E402,F401,F403

PLAIN_OPTIONS = [
    (OPT_LIST, b""),
    (OPT_INFO, go_data(b"")),
    (OPT_GO, go_data(b"")),
    (OPT_STRUCTURED_REPLY, b""),
    (OPT_EXTENDED_HEADERS, b""),
    (OPT_LIST_META_CONTEXT, meta_data(b"", [b"base:"])),
    (OPT_SET_META_CONTEXT, meta_data(b"", [b"base:allocation"])),
    (OPT_PEEK_EXPORT, b""),
    (99, b"xyz"),
]


def every_option_before_tls_gets_tls_reqd():
    c = srv.connect()
    c.handshake()
    for opt, data in PLAIN_OPTIONS:
        final, earlier = c.expect_option(opt, REP_ERR_TLS_REQD, data)
        check(not earlier, "option %d answered %r before its error" %
              (opt, earlier))
    # The same connection can still start TLS and get everything.
    starttls(c, ctx)
    final, earlier = c.expect_option(OPT_LIST, REP_ACK)
    check(any(b"" == r.data[4:] for r in earlier if r.type == REP_SERVER),
          "default export not listed over TLS")
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    c.structured = True
    final, _ = c.go(b"")
    check(final.type == REP_ACK, "GO over TLS: %r" % final)
    res = c.read(0, 4096)
    check(res.error == 0 and res.data == pattern(0, 4096), "read")
    res = c.write(8192, b"x" * 4096)
    check(res.error == 0, "write over TLS")
    res = c.read(8192, 4096)
    check(res.data == b"x" * 4096, "write did not land")
    c.close()


def abort_is_acknowledged():
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_ABORT, REP_ACK)
    closed_soon(c, 5)


def export_name_before_tls_disconnects():
    c = srv.connect()
    c.handshake()
    c.send_option(OPT_EXPORT_NAME, b"")
    junk = c.wait_closed(5)
    check(junk == b"", "EXPORT_NAME without TLS answered %r" % junk[:40])


def export_name_after_tls_serves():
    c = srv.connect()
    c.handshake()
    starttls(c, ctx)
    c.send_option(OPT_EXPORT_NAME, b"")
    size, tflags = struct.unpack(">QH", c.recv_exact(10))
    check(size == 4 * MIB, "size %d" % size)
    res = c.read(0, 512)
    check(res.error == 0 and res.data == pattern(0, 512), "read")
    c.close()


def selective_tls_serves_plain_clients_but_not_tls_only_exports():
    conf = os.path.join(scratch(), "sel.conf")
    with open(conf, "w") as f:
        f.write("[server]\ntls = on\ntls-certificates = %s\n"
                "[export open]\nimage = %s\n"
                "[export secret]\nimage = %s\ntls-only = yes\n" %
                (os.path.join(pki, "server"), img, img2))
    s = Server("--config=" + conf, name="selective")
    c = s.connect()
    c.handshake()
    final, earlier = c.expect_option(OPT_LIST, REP_ACK)
    names = [r.data[4:] for r in earlier]
    check(names == [b"open"], "plain LIST: %r" % names)
    final, _ = c.go(b"secret")
    check(final.type == REP_ERR_TLS_REQD, "GO secret in the clear: %r" %
          final)
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    c.structured = True
    c.expect_option(OPT_LIST_META_CONTEXT, REP_ERR_TLS_REQD,
                    meta_data(b"secret", [b"base:"]))
    final, _ = c.go(b"open")
    check(final.type == REP_ACK, "GO open in the clear: %r" % final)
    res = c.read(0, 512)
    check(res.error == 0 and res.data == pattern(0, 512), "plain read")
    c.close()

    c = s.connect()
    c.handshake()
    starttls(c, ctx)
    final, earlier = c.expect_option(OPT_LIST, REP_ACK)
    names = sorted(r.data[4:] for r in earlier)
    check(names == [b"open", b"secret"], "TLS LIST: %r" % names)
    final, _ = c.go(b"secret")
    check(final.type == REP_ACK, "GO secret over TLS: %r" % final)
    res = c.read(0, 512)
    check(res.error == 0 and res.data == b"s" * 512, "TLS read")
    c.close()


pki = make_pki()
ctx = client_context(pki)
img = make_image("disk.raw", 4 * MIB, pattern(0, 1 * MIB))
img2 = make_image("secret.raw", 1 * MIB, b"s" * 4096)
srv = tls_server(pki, img, "require", name="forced")
run(every_option_before_tls_gets_tls_reqd,
    abort_is_acknowledged,
    export_name_before_tls_disconnects,
    export_name_after_tls_serves,
    selective_tls_serves_plain_clients_but_not_tls_only_exports)
