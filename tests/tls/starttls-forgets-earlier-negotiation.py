#!/usr/bin/python3
"""What a client negotiates before NBD_OPT_STARTTLS is forgotten once TLS
is up, as the spec requires (an attacker in the middle could have chosen
it; CVE-2021-3716): structured replies, extended headers and meta
contexts must be asked for again over TLS, and a client that does not
ask gets simple replies.  STARTTLS inside TLS is refused, and with
--tls=off STARTTLS is refused by policy."""

import os
import struct
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tlsraw import *  # noqa: E402,F401,F403


def structured_replies_are_not_carried_over():
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    c.set_meta([b"base:allocation"])
    starttls(c, ctx)
    c.structured = False
    c.contexts = {}
    final, _ = c.go(b"")
    check(final.type == REP_ACK, "GO over TLS: %r" % final)
    check(not c.tflags & TFLAG_SEND_DF,
          "DF offered: structured replies still on")
    # nbdraw raises ProtocolError on a structured reply it did not ask for.
    res = c.read(0, 4096)
    check(res.error == 0 and res.simple, "read: %r" % res.__dict__)
    check(res.data == pattern(0, 4096), "read over TLS: wrong data")
    res = c.request(CMD_BLOCK_STATUS, 0, 4096)
    check(res.error != 0, "block status without meta contexts succeeded")
    c.disconnect()
    c.close()


def structured_replies_can_be_negotiated_again():
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    starttls(c, ctx)
    # Before TLS, a second STRUCTURED_REPLY would be refused as a repeat.
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    c.structured = True
    c.set_meta([b"base:allocation"])
    final, _ = c.go(b"")
    check(final.type == REP_ACK, "GO over TLS: %r" % final)
    check(c.tflags & TFLAG_SEND_DF, "DF not offered")
    res = c.read(0, 8192)
    check(res.error == 0 and not res.simple, "read: %r" % res.__dict__)
    check(res.data == pattern(0, 8192), "read over TLS: wrong data")
    res = c.request(CMD_BLOCK_STATUS, 0, 65536)
    check(res.error == 0 and res.extents, "block status over TLS failed")
    c.close()


def meta_contexts_need_structured_replies_again():
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    starttls(c, ctx)
    c.expect_option(OPT_SET_META_CONTEXT, REP_ERR_INVALID,
                    meta_data(b"", [b"base:allocation"]))
    c.close()


def extended_headers_are_not_carried_over():
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_EXTENDED_HEADERS, REP_ACK)
    starttls(c, ctx)
    final, _ = c.go(b"")
    check(final.type == REP_ACK, "GO over TLS: %r" % final)
    c.extended = c.structured = False
    res = c.read(4096, 512)     # compact header, simple reply
    check(res.error == 0 and res.simple, "read: %r" % res.__dict__)
    check(res.data == pattern(4096, 512), "wrong data")
    c.close()


def starttls_twice_is_refused():
    c = srv.connect()
    c.handshake()
    starttls(c, ctx)
    c.expect_option(OPT_STARTTLS, REP_ERR_INVALID)
    final, _ = c.go(b"")
    check(final.type == REP_ACK, "GO after the refusal: %r" % final)
    c.close()


def starttls_without_tls_configured_is_refused_by_policy():
    s = Server(img, "-f", "raw", name="plain")
    c = s.connect()
    c.handshake()
    c.expect_option(OPT_STARTTLS, REP_ERR_POLICY)
    final, _ = c.go(b"")
    check(final.type == REP_ACK, "GO after the refusal: %r" % final)
    c.close()


pki = make_pki()
ctx = client_context(pki)
img = make_image("disk.raw", 4 * MIB, pattern(0, 1 * MIB))
srv = tls_server(pki, img, "on", name="tls")
run(structured_replies_are_not_carried_over,
    structured_replies_can_be_negotiated_again,
    meta_contexts_need_structured_replies_again,
    extended_headers_are_not_carried_over,
    starttls_twice_is_refused,
    starttls_without_tls_configured_is_refused_by_policy)
