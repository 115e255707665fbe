#!/usr/bin/python3
"""Malformed requests in the transmission phase get the error the spec
names and leave the connection usable: unknown commands and flags a
command may not carry are EINVAL, DF needs structured replies, block
status needs a meta context, oversized reads and writes are EINVAL (the
refused write's payload is consumed, not taken as the next request),
ranges past the end are refused (ENOSPC for writes, EINVAL for the
rest), writes to a read-only export are EPERM.  Only a bad request
magic ends the connection, and it ends no other."""

import os
import struct
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F401,F403

SIZE = 64 * MIB


def expect_error(c, want, cmd, offset=0, length=0, flags=0, payload=b""):
    """Send one request and check it fails with an error in want."""
    if isinstance(want, int):
        want = (want,)
    res = c.request(cmd, offset, length, flags, payload)
    check(res.error in want,
          "cmd %d offset %d length %d flags 0x%x: error %d, expected %r" %
          (cmd, offset, length, flags, res.error, want))
    if cmd == CMD_READ:
        check(not res.data, "failed READ carried data")
    return res


def usable(c):
    """The connection still reads and writes correctly."""
    data = pattern(4096, 4096, seed=len(c.done) + c.next_cookie)
    res = c.write(4096, data)
    check(res.error == 0, "write after an error: %d" % res.error)
    res = c.read(4096, 4096)
    check(res.error == 0 and res.data == data, "read after an error failed")


def each_mode():
    """A fresh connection in each reply mode."""
    for mode in ("simple", "structured", "extended"):
        c = srv.connect()
        c.connect_export(structured=mode == "structured",
                         extended=mode == "extended",
                         meta=["base:allocation"] if mode != "simple"
                         else ())
        yield mode, c
        c.close()


def unknown_commands_get_einval():
    for mode, c in each_mode():
        for cmd in (8, 9, 42, 0x7fff, 0xffff):
            expect_error(c, EINVAL, cmd, 0, 512)
        usable(c)


def flags_not_allowed_for_the_command_get_einval():
    for mode, c in each_mode():
        bad = [(CMD_READ, CMD_FLAG_NO_HOLE), (CMD_READ, CMD_FLAG_REQ_ONE),
               (CMD_READ, CMD_FLAG_FAST_ZERO), (CMD_READ, 1 << 15),
               (CMD_WRITE, CMD_FLAG_NO_HOLE), (CMD_WRITE, CMD_FLAG_DF),
               (CMD_WRITE, CMD_FLAG_REQ_ONE), (CMD_WRITE, 1 << 9),
               (CMD_FLUSH, CMD_FLAG_NO_HOLE), (CMD_FLUSH, 1 << 6),
               (CMD_TRIM, CMD_FLAG_NO_HOLE), (CMD_TRIM, CMD_FLAG_DF),
               (CMD_WRITE_ZEROES, CMD_FLAG_DF),
               (CMD_WRITE_ZEROES, CMD_FLAG_REQ_ONE),
               (CMD_CACHE, CMD_FLAG_DF)]
        if mode != "extended":
            # PAYLOAD_LEN exists only with extended headers.
            bad.append((CMD_WRITE, CMD_FLAG_PAYLOAD_LEN))
        if mode != "simple":
            bad += [(CMD_BLOCK_STATUS, CMD_FLAG_DF),
                    (CMD_BLOCK_STATUS, CMD_FLAG_NO_HOLE)]
        for cmd, flag in bad:
            if cmd in (CMD_TRIM,) and not c.tflags & TFLAG_SEND_TRIM:
                continue
            payload = pattern(0, 512) if cmd == CMD_WRITE else b""
            expect_error(c, EINVAL, cmd, 0, 512, flag, payload)
        # The same commands without the flag work.
        check(c.read(0, 512).error == 0, "plain read failed")
        check(c.request(CMD_FLUSH).error == 0, "plain flush failed")
        check(c.request(CMD_WRITE_ZEROES, 0, 512, CMD_FLAG_NO_HOLE).error
              == 0, "WRITE_ZEROES with NO_HOLE failed")
        if c.tflags & TFLAG_SEND_FUA:
            check(c.read(0, 512, CMD_FLAG_FUA).error == 0,
                  "READ with FUA refused though SEND_FUA was advertised")
        usable(c)


def df_needs_structured_replies():
    for mode, c in each_mode():
        if mode == "simple":
            check(not c.tflags & TFLAG_SEND_DF,
                  "SEND_DF advertised without structured replies")
            expect_error(c, EINVAL, CMD_READ, 0, 512, CMD_FLAG_DF)
        else:
            check(c.tflags & TFLAG_SEND_DF,
                  "SEND_DF not advertised with structured replies")
            res = c.read(0, 4096, CMD_FLAG_DF)
            check(res.error == 0, "DF read: error %d" % res.error)
        usable(c)


def block_status_needs_a_meta_context():
    # Without structured replies.
    c = srv.connect()
    c.connect_export()
    expect_error(c, EINVAL, CMD_BLOCK_STATUS, 0, 4096)
    usable(c)
    c.close()
    # Structured, but no context selected.
    c = srv.connect()
    c.connect_export(structured=True)
    expect_error(c, EINVAL, CMD_BLOCK_STATUS, 0, 4096)
    usable(c)
    c.close()
    # A SET_META_CONTEXT that selected nothing.
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    c.structured = True
    check(c.set_meta([b"x-nosuch:thing"]) == {}, "unknown context selected")
    final, _ = c.go()
    check(final.type == REP_ACK, "GO: %r" % final)
    expect_error(c, EINVAL, CMD_BLOCK_STATUS, 0, 4096)
    usable(c)
    c.close()
    # Contexts selected for another export name do not count.
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_EXTENDED_HEADERS, REP_ACK)
    c.extended = c.structured = True
    final, _ = c.option(OPT_SET_META_CONTEXT,
                        meta_data(b"other", [b"base:allocation"]))
    check(final.type == REP_ERR_UNKNOWN,
          "SET_META_CONTEXT for a missing export answered %s" %
          rep_name(final.type))
    final, _ = c.go()
    expect_error(c, EINVAL, CMD_BLOCK_STATUS, 0, 4096)
    c.close()


def oversize_requests_get_einval_and_the_connection_survives():
    for mode, c in each_mode():
        big_read = (EINVAL,) if mode == "simple" else (EINVAL, EOVERFLOW)
        expect_error(c, big_read, CMD_READ, 0, MAX_PAYLOAD + 1)
        # The payload of a refused write follows its header and must be
        # skipped; it is built to look like requests if misparsed.
        if c.extended:
            fake = struct.pack(">IHHQQQ", EXT_REQUEST_MAGIC, 0, CMD_DISC,
                               0, 0, 0)
        else:
            fake = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0,
                               0)
        payload = (fake * ((MAX_PAYLOAD + 1) // len(fake) + 1))
        payload = payload[:MAX_PAYLOAD + 1]
        before = c.read(0, 4096).data
        expect_error(c, EINVAL, CMD_WRITE, 0, MAX_PAYLOAD + 1, 0, payload)
        check(c.read(0, 4096).data == before, "refused write changed data")
        # Exactly the limit is fine.
        data = pattern(0, MAX_PAYLOAD, seed=0x77)
        check(c.write(0, data).error == 0, "32 MiB write failed")
        res = c.read(0, MAX_PAYLOAD)
        check(res.error == 0 and res.data == data, "32 MiB read failed")
        usable(c)


def terabyte_write_is_refused_without_waiting_for_it():
    # An extended WRITE announcing 1 TiB: refused (EINVAL, or a hard
    # disconnect, which the spec allows for a payload this large); the
    # server neither waits for nor buffers the terabyte.
    bystander = srv.connect()
    bystander.connect_export()
    c = srv.connect()
    c.connect_export(extended=True)
    before = srv.vm_peak_kib()
    ck = c.send_request(CMD_WRITE, 0, 1 << 40, 0, b"\xab" * 4096)
    try:
        res = c.reply(ck)
        check(res.error == EINVAL, "1 TiB write: error %d" % res.error)
    except Closed:
        pass
    c.close()
    check(srv.vm_peak_kib() - before < 512 * 1024,
          "server grew by more than 512 MiB")
    usable(bystander)
    bystander.close()


def ranges_past_the_end_are_refused():
    for mode, c in each_mode():
        for off, n in ((SIZE - 512, 1024), (SIZE, 1), (SIZE + 4096, 512),
                       (2**64 - 512, 1024), (2**63, 512)):
            expect_error(c, EINVAL, CMD_READ, off, n)
            expect_error(c, ENOSPC, CMD_WRITE, off, n, 0,
                         pattern(0, n))
            expect_error(c, EINVAL, CMD_TRIM, off, n)
            expect_error(c, ENOSPC, CMD_WRITE_ZEROES, off, n)
            if mode != "simple":
                expect_error(c, EINVAL, CMD_BLOCK_STATUS, off, n)
        # The last byte is reachable.
        check(c.write(SIZE - 1, b"z").error == 0, "write of last byte")
        check(c.read(SIZE - 1, 1).data == b"z", "read of last byte")
        usable(c)


def writes_to_a_read_only_export_get_eperm():
    ro = Server(img, "-f", "raw", "-r", name="ro")
    c = ro.connect()
    c.connect_export(structured=True)
    check(c.tflags & TFLAG_READ_ONLY, "read-only flag not set")
    before = c.read(0, 4096).data
    expect_error(c, EPERM, CMD_WRITE, 0, 4096, 0, pattern(0, 4096, seed=9))
    # Not advertised on a read-only export, so EINVAL is also right.
    expect_error(c, (EPERM, EINVAL), CMD_WRITE_ZEROES, 0, 4096)
    expect_error(c, (EPERM, EINVAL), CMD_TRIM, 0, 4096)
    check(c.read(0, 4096).data == before, "read-only export changed")
    check(c.request(CMD_FLUSH).error == 0, "flush on read-only failed")
    c.close()
    check(ro.stop() == 0, "read-only server did not stop cleanly")


def bad_request_magic_disconnects_only_that_client():
    bystander = srv.connect()
    bystander.connect_export(structured=True)
    for mode, c in each_mode():
        magic = EXT_REQUEST_MAGIC if not c.extended else REQUEST_MAGIC
        c.send_request(CMD_READ, 0, 512, magic=magic, expect_reply=False)
        junk = c.wait_closed(15)
        check(junk == b"", "%s: bad magic answered with %r" %
              (mode, junk[:32]))
        usable(bystander)
    # Other wrong magics, including the historic and reserved ones.
    for magic in (0x12560953, 0x25609514, SIMPLE_REPLY_MAGIC, 0):
        c = srv.connect()
        c.connect_export()
        c.send_request(CMD_READ, 0, 512, magic=magic, expect_reply=False)
        check(c.wait_closed(15) == b"", "magic 0x%x answered" % magic)
        usable(bystander)
    bystander.close()


def disc_handles_requests_in_flight():
    # Writes sent just before NBD_CMD_DISC are still carried out; replies
    # to them, if sent, are well-formed.
    for mode, c in each_mode():
        base = 32 * MIB
        datas = {}
        for i in range(16):
            off = base + i * 65536
            datas[off] = pattern(off, 65536, seed=0xd15c + i)
            c.send_request(CMD_WRITE, off, 65536, 0, datas[off])
        c.disconnect()
        try:
            while c.pending:
                res = c.read_message()
                check(res.error == 0, "write before DISC: error %d" %
                      res.error)
        except Closed:
            pass
        check(c.wait_closed(15) == b"", "%s: bytes after DISC" % mode)
        other = srv.connect()
        other.connect_export()
        for off, data in datas.items():
            check(other.read(off, 65536).data == data,
                  "%s: write at %d before DISC lost" % (mode, off))
        other.close()


img = make_image("disk.raw", SIZE, pattern(0, 1 * MIB))
srv = Server(img, "-f", "raw", name="req")
run(unknown_commands_get_einval,
    flags_not_allowed_for_the_command_get_einval,
    df_needs_structured_replies,
    block_status_needs_a_meta_context,
    oversize_requests_get_einval_and_the_connection_survives,
    terabyte_write_is_refused_without_waiting_for_it,
    ranges_past_the_end_are_refused,
    writes_to_a_read_only_export_get_eperm,
    bad_request_magic_disconnects_only_that_client,
    disc_handles_requests_in_flight)
