#!/usr/bin/python3
"""The handshake answers every malformed or unknown option the way the
spec prescribes: an error reply and the negotiation goes on where the
spec allows it, a disconnect where it demands one (unknown client flags,
a bad option magic, EXPORT_NAME for an export that does not exist), and
never an allocation sized by the client.  Each case runs on a fresh
connection, and the server keeps serving others throughout."""

import os
import struct
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 8 * MIB


def still_serving():
    """A well-behaved client still gets through to data."""
    c = srv.connect()
    c.connect_export(structured=True)
    res = c.read(0, 4096)
    check(res.error == 0 and res.data == pattern(0, 4096),
          "server no longer serves data")
    c.close()


def negotiation_continues(c):
    """After an error reply the same connection can still list and GO."""
    final, earlier = c.expect_option(OPT_LIST, REP_ACK)
    check(any(r.type == REP_SERVER for r in earlier), "LIST found nothing")
    final, _ = c.go(b"")
    check(final.type == REP_ACK, "GO after an error: %r" % final)
    res = c.read(0, 512)
    check(res.error == 0 and res.data == pattern(0, 512), "read failed")


def greeting_offers_fixed_newstyle_and_no_zeroes():
    c = srv.connect()
    flags = c.greeting()
    check(flags == FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES,
          "handshake flags 0x%x" % flags)
    c.close()


def unknown_client_flags_disconnect():
    for cflags in (1 << 2, FLAG_C_FIXED_NEWSTYLE | 1 << 31, 0xffffffff):
        c = srv.connect()
        c.handshake(cflags=cflags)
        # Whatever the client sends next, the server must have dropped it.
        try:
            c.send_option(OPT_LIST)
        except Closed:
            pass
        junk = c.wait_closed(15)
        check(junk == b"", "client flags 0x%x answered with %r" %
              (cflags, junk[:40]))
    still_serving()


def bad_option_magic_disconnects():
    for magic in (IHAVEOPT ^ 1, INIT_PASSWD, OPT_REPLY_MAGIC, 0):
        c = srv.connect()
        c.handshake()
        c.send_option(OPT_LIST, magic=magic)
        junk = c.wait_closed(15)
        check(junk == b"", "bad magic 0x%x answered with %r" %
              (magic, junk[:40]))
    # Also after a good option.
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    c.send_option(OPT_GO, go_data(), magic=IHAVEOPT + (1 << 40))
    check(c.wait_closed(15) == b"", "bad magic after an option answered")
    still_serving()


def unknown_options_get_err_unsup_and_negotiation_continues():
    c = srv.connect()
    c.handshake()
    for opt, data in ((OPT_PEEK_EXPORT, b""), (0x1234, b"some data"),
                      (12, b"\0" * 100), (0x7fffffff, b""),
                      (0xffffffff, b"xyz")):
        c.expect_option(opt, REP_ERR_UNSUP, data)
    negotiation_continues(c)
    c.close()


def starttls_is_refused_by_policy():
    c = srv.connect()
    c.handshake()
    final, _ = c.option(OPT_STARTTLS)
    check(final.type in (REP_ERR_POLICY, REP_ERR_UNSUP),
          "STARTTLS answered %s" % rep_name(final.type))
    # STARTTLS with data is malformed: INVALID (or still refused).
    final, _ = c.option(OPT_STARTTLS, b"junk")
    check(final.type in (REP_ERR_INVALID, REP_ERR_POLICY, REP_ERR_UNSUP),
          "STARTTLS with data answered %s" % rep_name(final.type))
    negotiation_continues(c)
    c.close()


def truncated_go_data_gets_err_invalid():
    cases = (
        b"",                                    # nothing at all
        b"\0\0\0",                              # short name length
        struct.pack(">I", 10) + b"abcd",        # name past the end
        struct.pack(">I", 0xffffffff) + b"\0\0",
        struct.pack(">I", 0) + b"\0",           # half a count
        struct.pack(">IH", 0, 2) + b"\0\1",     # count says 2, one given
        struct.pack(">IH", 0, 1) + b"\0\1\0",   # trailing byte
        struct.pack(">IH", 0, 0) + b"extra",    # trailing garbage
    )
    for opt in (OPT_INFO, OPT_GO):
        c = srv.connect()
        c.handshake()
        for data in cases:
            final, earlier = c.option(opt, data)
            check(final.type == REP_ERR_INVALID,
                  "option %d with %r answered %s" % (opt, data,
                                                     rep_name(final.type)))
            check(not earlier, "INFO replies before ERR_INVALID for %r" %
                  data)
        negotiation_continues(c)
        c.close()


def go_for_unknown_export_gets_err_unknown():
    c = srv.connect()
    c.handshake()
    for name in (b"nosuch", b"x" * 4096):
        final, earlier = c.go(name)
        check(final.type == REP_ERR_UNKNOWN,
              "GO %r... answered %s" % (name[:16], rep_name(final.type)))
        check(not earlier, "INFO sent for an unknown export")
    negotiation_continues(c)
    c.close()


def malformed_meta_context_data_gets_err_invalid():
    good_q = struct.pack(">I", 15) + b"base:allocation"
    cases = (
        b"",
        struct.pack(">I", 0) + b"\0\0",                  # short count
        struct.pack(">I", 9) + b"\0\0\0\0",              # name past end
        struct.pack(">II", 0, 1),                        # query missing
        struct.pack(">II", 0, 1) + struct.pack(">I", 16)
        + b"base:allocation",                            # query past end
        struct.pack(">II", 0, 1) + struct.pack(">I", 0xffffffff) + b"b",
        struct.pack(">II", 0, 2) + good_q,               # count too big
        struct.pack(">II", 0, 1) + good_q + b"!",        # trailing garbage
        struct.pack(">II", 0, 0) + good_q,               # count too small
    )
    for opt in (OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT):
        c = srv.connect()
        c.handshake()
        c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
        for data in cases:
            final, earlier = c.option(opt, data)
            check(final.type == REP_ERR_INVALID,
                  "option %d with %r answered %s" % (opt, data,
                                                     rep_name(final.type)))
        c.structured = True
        negotiation_continues(c)
        c.close()


def options_that_take_no_data_refuse_data():
    c = srv.connect()
    c.handshake()
    for opt in (OPT_LIST, OPT_STRUCTURED_REPLY, OPT_EXTENDED_HEADERS):
        c.expect_option(opt, REP_ERR_INVALID, b"\0\0\0\0")
    negotiation_continues(c)
    c.close()


def huge_option_length_is_refused_without_allocating():
    before = srv.vm_peak_kib()
    for opt in (OPT_GO, OPT_SET_META_CONTEXT, OPT_EXPORT_NAME, 0x4242):
        c = srv.connect()
        c.handshake()
        c.send_option(opt, length=0xffffffff)
        # Refused either with ERR_TOO_BIG (the server then cannot skip
        # 4 GiB, so it may also close) or with a disconnect.
        got = c.wait_closed(15)
        if got:
            check(len(got) >= 20, "partial reply %r" % got)
            magic, o, rtype, n = struct.unpack(">QIII", got[:20])
            check(magic == OPT_REPLY_MAGIC and o == opt and
                  rtype == REP_ERR_TOO_BIG,
                  "option %d of 4 GiB answered %s" % (opt,
                                                      rep_name(rtype)))
    # A megabyte: beyond any option we take, still refused; a server that
    # answers ERR_TOO_BIG and skips the data may carry on.
    c = srv.connect()
    c.handshake()
    try:
        c.send_option(OPT_GO, b"\0" * (1 << 20))
        final = c.option_reply(OPT_GO)
    except Closed:
        final = None
    if final is not None:
        check(final.type == REP_ERR_TOO_BIG,
              "1 MiB GO answered %s" % rep_name(final.type))
        if c.is_open(1):
            negotiation_continues(c)
    c.close()
    grown = srv.vm_peak_kib() - before
    check(grown < 512 * 1024,
          "server's peak virtual size grew by %d KiB" % grown)
    still_serving()


def too_many_options_disconnect():
    c = srv.connect()
    c.handshake()
    for i in range(10000):
        try:
            c.send_option(OPT_LIST)
            final = c.option_reply(OPT_LIST)
            while final.type == REP_SERVER:
                final = c.option_reply(OPT_LIST)
        except Closed:
            check(i >= 16, "closed after only %d options" % i)
            break
        check(final.type == REP_ACK, "LIST %d answered %s" %
              (i, rep_name(final.type)))
    else:
        raise AssertionError("10000 options accepted without a disconnect")
    still_serving()


def export_name_for_unknown_export_disconnects():
    for name in (b"nosuch", b"\xff" * 300):
        c = srv.connect()
        c.handshake()
        c.send_option(OPT_EXPORT_NAME, name)
        junk = c.wait_closed(15)
        check(junk == b"", "EXPORT_NAME %r answered %r" % (name[:16],
                                                           junk[:40]))
    still_serving()


def export_name_honours_no_zeroes():
    # Negotiated: 8 + 2 bytes, then the first reply right behind them.
    c = srv.connect()
    c.handshake(no_zeroes=True)
    check(c.cflags & FLAG_C_NO_ZEROES, "NO_ZEROES not offered")
    c.send_option(OPT_EXPORT_NAME, b"")
    size, tflags = struct.unpack(">QH", c.recv_exact(10))
    check(size == SIZE, "size %d" % size)
    check(tflags & TFLAG_HAS_FLAGS, "flags 0x%x" % tflags)
    c.size, c.tflags = size, tflags
    res = c.read(0, 512)
    check(res.error == 0 and res.data == pattern(0, 512),
          "read after EXPORT_NAME with NO_ZEROES failed")
    c.close()
    # Not negotiated: 124 zero bytes follow.
    c = srv.connect()
    c.handshake(no_zeroes=False)
    c.send_option(OPT_EXPORT_NAME, b"")
    reply = c.recv_exact(134)
    size, tflags = struct.unpack(">QH", reply[:10])
    check(size == SIZE, "size %d" % size)
    check(reply[10:] == bytes(124), "reserved bytes not zero")
    c.size, c.tflags = size, tflags
    res = c.read(4096, 512)
    check(res.error == 0 and res.data == pattern(4096, 512),
          "read after EXPORT_NAME with zeroes failed")
    c.close()


def info_and_go_describe_the_export():
    c = srv.connect()
    c.handshake()
    final, infos = c.go(b"", (INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE,
                              0x7777), option=OPT_INFO)
    check(final.type == REP_ACK, "INFO: %r" % final)
    check(infos[INFO_EXPORT][0] == SIZE, "INFO size %r" % (infos[0],))
    check(infos.get(INFO_DESCRIPTION) == b"protocol test disk",
          "description %r" % infos.get(INFO_DESCRIPTION))
    check(infos.get(INFO_BLOCK_SIZE) == (1, 4096, MAX_PAYLOAD),
          "block size %r" % (infos.get(INFO_BLOCK_SIZE),))
    # INFO does not end the handshake; GO with the same request matches.
    final, infos2 = c.go(b"", (INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE,
                               0x7777))
    check(final.type == REP_ACK, "GO: %r" % final)
    check(infos2 == infos, "GO %r differs from INFO %r" % (infos2, infos))
    check(c.read(0, 512).data == pattern(0, 512), "read failed")
    c.close()


def abort_is_acknowledged_then_closed():
    c = srv.connect()
    c.handshake()
    c.send_option(OPT_ABORT)
    got = c.wait_closed(15)
    # The spec asks for an ACK but tells clients to cope without one.
    if got:
        check(len(got) == 20, "ABORT answered %r" % got)
        magic, opt, rtype, n = struct.unpack(">QIII", got)
        check(magic == OPT_REPLY_MAGIC and opt == OPT_ABORT and
              rtype == REP_ACK and n == 0, "ABORT answered %r" % got)
    still_serving()


def meta_context_before_structured_replies_is_invalid():
    c = srv.connect()
    c.handshake()
    final, _ = c.option(OPT_SET_META_CONTEXT,
                        meta_data(b"", [b"base:allocation"]))
    check(final.type == REP_ERR_INVALID,
          "SET_META_CONTEXT without structured replies answered %s" %
          rep_name(final.type))
    negotiation_continues(c)
    c.close()


def options_after_go_are_bad_requests():
    # After GO's ACK the connection is in transmission: an option header
    # is a request with a bad magic.
    for structured in (False, True):
        c = srv.connect()
        c.connect_export(structured=structured)
        c.send_option(OPT_LIST)
        junk = c.wait_closed(15)
        check(junk == b"", "option after GO answered with %r" % junk[:40])
    # Likewise after EXPORT_NAME.
    c = srv.connect()
    c.handshake()
    c.send_option(OPT_EXPORT_NAME, b"")
    c.recv_exact(10)
    c.send_option(OPT_GO, go_data())
    check(c.wait_closed(15) == b"", "option after EXPORT_NAME answered")
    still_serving()


img = make_image("disk.raw", SIZE, pattern(0, SIZE))
srv = Server(img, "-f", "raw", "-D", "protocol test disk", name="opts")
run(greeting_offers_fixed_newstyle_and_no_zeroes,
    unknown_client_flags_disconnect,
    bad_option_magic_disconnects,
    unknown_options_get_err_unsup_and_negotiation_continues,
    starttls_is_refused_by_policy,
    truncated_go_data_gets_err_invalid,
    go_for_unknown_export_gets_err_unknown,
    malformed_meta_context_data_gets_err_invalid,
    options_that_take_no_data_refuse_data,
    huge_option_length_is_refused_without_allocating,
    too_many_options_disconnect,
    export_name_for_unknown_export_disconnects,
    export_name_honours_no_zeroes,
    info_and_go_describe_the_export,
    abort_is_acknowledged_then_closed,
    meta_context_before_structured_replies_is_invalid,
    options_after_go_are_bad_requests)
