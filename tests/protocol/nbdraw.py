"""A raw-socket NBD client for protocol tests, and a way to run diskserve.

libnbd will not send what these tests need: extended headers (libnbd
1.14 predates them), malformed options, bad magics, flags a command may
not carry, payloads cut short.  This module speaks the wire format byte
by byte with nothing but the socket module, and checks every reply it
reads against the spec: a reply of the wrong kind for what was
negotiated, an unknown cookie, a chunk outside its request or an
extended header whose offset is not the request's raises ProtocolError.

Tests import it, start a server with Server(...), open connections with
Server.connect() and fail by raising; run() turns that into exit 1.
"""

import atexit
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

# ---- wire constants (see the spec; names without the NBD_ prefix) -----

INIT_PASSWD = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
EXT_REQUEST_MAGIC = 0x21E41C71
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCT_REPLY_MAGIC = 0x668E33EF
EXT_REPLY_MAGIC = 0x6E8A278C

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0
FLAG_C_NO_ZEROES = 1 << 1

TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6
TFLAG_SEND_DF = 1 << 7
TFLAG_SEND_CACHE = 1 << 10
TFLAG_SEND_FAST_ZERO = 1 << 11

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_PEEK_EXPORT = 4
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
REP_ERR_POLICY = REP_FLAG_ERROR | 2
REP_ERR_INVALID = REP_FLAG_ERROR | 3
REP_ERR_PLATFORM = REP_FLAG_ERROR | 4
REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5
REP_ERR_UNKNOWN = REP_FLAG_ERROR | 6
REP_ERR_SHUTDOWN = REP_FLAG_ERROR | 7
REP_ERR_BLOCK_SIZE_REQD = REP_FLAG_ERROR | 8
REP_ERR_TOO_BIG = REP_FLAG_ERROR | 9

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4
CMD_FLAG_PAYLOAD_LEN = 1 << 5

REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_BLOCK_STATUS_EXT = 6
REPLY_TYPE_ERROR = (1 << 15) + 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2

EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108

STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1

MIB = 1024 * 1024
GIB = 1024 * MIB
MAX_PAYLOAD = 32 * MIB

# Seconds any single read may wait before the test calls the server hung.
IO_TIMEOUT = 30


class ProtocolError(Exception):
    """The server sent something the spec does not allow."""


class Closed(Exception):
    """The server closed the connection."""


def check(cond, what):
    """Fail the test with what unless cond holds."""
    if not cond:
        raise AssertionError(what)


def rep_name(rtype):
    """A readable name for an option reply type."""
    names = {
        REP_ACK: "ACK", REP_SERVER: "SERVER", REP_INFO: "INFO",
        REP_META_CONTEXT: "META_CONTEXT", REP_ERR_UNSUP: "ERR_UNSUP",
        REP_ERR_POLICY: "ERR_POLICY", REP_ERR_INVALID: "ERR_INVALID",
        REP_ERR_PLATFORM: "ERR_PLATFORM", REP_ERR_TLS_REQD: "ERR_TLS_REQD",
        REP_ERR_UNKNOWN: "ERR_UNKNOWN", REP_ERR_SHUTDOWN: "ERR_SHUTDOWN",
        REP_ERR_BLOCK_SIZE_REQD: "ERR_BLOCK_SIZE_REQD",
        REP_ERR_TOO_BIG: "ERR_TOO_BIG",
    }
    return names.get(rtype, "0x%x" % rtype)


# ---- option haggling ---------------------------------------------------

def go_data(name=b"", infos=()):
    """The data of NBD_OPT_INFO / NBD_OPT_GO."""
    out = struct.pack(">I", len(name)) + name
    out += struct.pack(">H", len(infos))
    for i in infos:
        out += struct.pack(">H", i)
    return out


def meta_data(name=b"", queries=()):
    """The data of NBD_OPT_LIST_META_CONTEXT / SET_META_CONTEXT."""
    out = struct.pack(">I", len(name)) + name
    out += struct.pack(">I", len(queries))
    for q in queries:
        out += struct.pack(">I", len(q)) + q
    return out


class OptReply:
    """One option reply: option echoed, reply type, data."""

    def __init__(self, option, rtype, data):
        self.option = option
        self.type = rtype
        self.data = data

    def __repr__(self):
        return "OptReply(%d, %s, %r)" % (self.option, rep_name(self.type),
                                          self.data[:64])


class Result:
    """The whole reply to one request."""

    def __init__(self, cookie, cmd, offset, length):
        self.cookie = cookie
        self.cmd = cmd
        self.offset = offset
        self.length = length
        self.error = 0          # first error seen, 0 on success
        self.messages = []      # error strings from error chunks
        self.data = None        # READ: the bytes, holes filled with zeroes
        self.extents = {}       # BLOCK_STATUS: context id -> [(len, flags)]
        self.chunks = []        # (magic, flags, type, header offset)
        self.simple = False     # answered with a simple reply


class Conn:
    """One client connection, driven step by step by a test."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(IO_TIMEOUT)
        self.hflags = None
        self.structured = False
        self.extended = False
        self.size = None
        self.tflags = None
        self.contexts = {}      # context name -> id from SET_META_CONTEXT
        self.next_cookie = 1
        self.pending = {}       # cookie -> Result under construction
        self.done = {}          # cookie -> finished Result not yet taken
        self._read_cov = {}     # cookie -> list of (start, end) covered

    # -- bytes --

    def send(self, data):
        """Send all of data; Closed if the server has gone."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed("send: %s" % e)

    def recv_exact(self, n):
        """Receive exactly n bytes; Closed on end of stream."""
        parts = []
        while n > 0:
            try:
                b = self.sock.recv(min(n, 1 << 20))
            except ConnectionResetError as e:
                raise Closed("recv: %s" % e)
            except socket.timeout:
                raise ProtocolError("no reply within %s s" %
                                    self.sock.gettimeout())
            if not b:
                raise Closed("end of stream with %d bytes missing" % n)
            parts.append(b)
            n -= len(b)
        return b"".join(parts)

    def wait_closed(self, timeout=IO_TIMEOUT):
        """Read until the server closes; return the bytes it sent first.
        Raises ProtocolError if it is still open after timeout seconds."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("connection still open after %.1f s "
                                    "(%d bytes received)" %
                                    (timeout, sum(map(len, got))))
            self.sock.settimeout(left)
            try:
                b = self.sock.recv(65536)
            except ConnectionResetError:
                b = b""
            except socket.timeout:
                continue
            if not b:
                self.sock.settimeout(IO_TIMEOUT)
                return b"".join(got)
            got.append(b)

    def is_open(self, wait=0.3):
        """True when the server has neither closed the connection nor sent
        anything unasked within wait seconds."""
        self.sock.settimeout(wait)
        try:
            b = self.sock.recv(1, socket.MSG_PEEK)
        except socket.timeout:
            return True
        except ConnectionResetError:
            return False
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        if b:
            raise ProtocolError("unexpected bytes from server: %r" % b)
        return False

    def close(self):
        self.sock.close()

    # -- handshake --

    def greeting(self):
        """Read the fixed newstyle greeting; returns the handshake flags."""
        magic, opt, flags = struct.unpack(">QQH", self.recv_exact(18))
        if magic != INIT_PASSWD or opt != IHAVEOPT:
            raise ProtocolError("bad greeting magic %x %x" % (magic, opt))
        if flags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
            raise ProtocolError("unknown handshake flags 0x%x" % flags)
        self.hflags = flags
        return flags

    def handshake(self, no_zeroes=True, cflags=None):
        """Greeting and client flags (FIXED_NEWSTYLE, NO_ZEROES if offered
        and wanted, or exactly cflags)."""
        self.greeting()
        if cflags is None:
            cflags = FLAG_C_FIXED_NEWSTYLE
            if no_zeroes and self.hflags & FLAG_NO_ZEROES:
                cflags |= FLAG_C_NO_ZEROES
        self.cflags = cflags
        self.send(struct.pack(">I", cflags))

    def send_option(self, option, data=b"", length=None, magic=IHAVEOPT):
        """Send an option header (length defaults to len(data)) and data."""
        if length is None:
            length = len(data)
        self.send(struct.pack(">QII", magic, option, length) + data)

    def option_reply(self, option=None):
        """Read one option reply; checks its magic and echoed option."""
        magic, opt, rtype, length = struct.unpack(">QIII",
                                                  self.recv_exact(20))
        if magic != OPT_REPLY_MAGIC:
            raise ProtocolError("bad option reply magic 0x%x" % magic)
        if option is not None and opt != option:
            raise ProtocolError("reply for option %d, expected %d" %
                                (opt, option))
        data = self.recv_exact(length) if length else b""
        return OptReply(opt, rtype, data)

    def option(self, option, data=b"", length=None):
        """Send an option and read replies up to the final one (ACK or an
        error).  Returns (final reply, [earlier replies])."""
        self.send_option(option, data, length)
        earlier = []
        while True:
            r = self.option_reply(option)
            if r.type in (REP_SERVER, REP_INFO, REP_META_CONTEXT):
                earlier.append(r)
                continue
            if r.type != REP_ACK and not r.type & REP_FLAG_ERROR:
                raise ProtocolError("unknown option reply type 0x%x" %
                                    r.type)
            return r, earlier

    def expect_option(self, option, rtype, data=b"", length=None):
        """Send an option and check its final reply type."""
        final, earlier = self.option(option, data, length)
        check(final.type == rtype,
              "option %d: got %s, expected %s" % (option,
                                                  rep_name(final.type),
                                                  rep_name(rtype)))
        return final, earlier

    def parse_infos(self, replies):
        """NBD_REP_INFO payloads by type; checks each one's length."""
        infos = {}
        for r in replies:
            check(r.type == REP_INFO, "non-INFO reply %r to INFO/GO" % r)
            check(len(r.data) >= 2, "INFO reply shorter than its type")
            itype = struct.unpack(">H", r.data[:2])[0]
            body = r.data[2:]
            if itype == INFO_EXPORT:
                check(len(body) == 10, "INFO_EXPORT length %d" % len(r.data))
                infos[itype] = struct.unpack(">QH", body)
            elif itype == INFO_BLOCK_SIZE:
                check(len(body) == 12,
                      "INFO_BLOCK_SIZE length %d" % len(r.data))
                infos[itype] = struct.unpack(">III", body)
            else:
                infos[itype] = body
        return infos

    def go(self, name=b"", infos=(), option=OPT_GO):
        """NBD_OPT_GO (or INFO); on ACK records size and flags.  Returns
        (final reply, infos by type)."""
        final, earlier = self.option(option, go_data(name, infos))
        parsed = self.parse_infos(earlier)
        if final.type == REP_ACK:
            check(INFO_EXPORT in parsed, "ACK without INFO_EXPORT")
            if option == OPT_GO:
                self.size, self.tflags = parsed[INFO_EXPORT]
                check(self.tflags & TFLAG_HAS_FLAGS,
                      "transmission flags without HAS_FLAGS")
        return final, parsed

    def set_meta(self, queries, name=b""):
        """SET_META_CONTEXT; records and returns {name: id}."""
        final, earlier = self.expect_option(OPT_SET_META_CONTEXT, REP_ACK,
                                            meta_data(name, queries))
        self.contexts = {}
        for r in earlier:
            check(r.type == REP_META_CONTEXT, "unexpected reply %r" % r)
            cid = struct.unpack(">I", r.data[:4])[0]
            self.contexts[r.data[4:].decode()] = cid
        return self.contexts

    def connect_export(self, structured=False, extended=False, meta=(),
                       name=b""):
        """The whole handshake up to transmission through NBD_OPT_GO."""
        self.handshake()
        if extended:
            self.expect_option(OPT_EXTENDED_HEADERS, REP_ACK)
            self.extended = self.structured = True
        elif structured:
            self.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
            self.structured = True
        if meta:
            self.set_meta([m.encode() for m in meta], name)
        final, _ = self.go(name, (INFO_BLOCK_SIZE,))
        check(final.type == REP_ACK, "GO refused: %r" % final)

    # -- transmission --

    def send_request(self, cmd, offset=0, length=0, flags=0, payload=b"",
                     cookie=None, magic=None, expect_reply=True):
        """Send one request header (compact or extended as negotiated) and
        its payload; returns the cookie."""
        if cookie is None:
            cookie = self.next_cookie
            self.next_cookie += 1
        if self.extended:
            if magic is None:
                magic = EXT_REQUEST_MAGIC
            hdr = struct.pack(">IHHQQQ", magic, flags, cmd, cookie, offset,
                              length)
        else:
            if magic is None:
                magic = REQUEST_MAGIC
            hdr = struct.pack(">IHHQQI", magic, flags, cmd, cookie, offset,
                              length)
        if expect_reply:
            self.pending[cookie] = Result(cookie, cmd, offset, length)
            self._read_cov[cookie] = []
        self.send(hdr + payload)
        return cookie

    def _finish(self, res):
        del self.pending[res.cookie]
        cov = self._read_cov.pop(res.cookie)
        if res.cmd == CMD_READ and res.error == 0 and not res.simple:
            covered = sum(e - s for s, e in cov)
            if covered != res.length:
                raise ProtocolError("READ reply covers %d of %d bytes" %
                                    (covered, res.length))
        if res.cmd == CMD_BLOCK_STATUS and res.error == 0:
            for cid in self.contexts.values():
                if cid not in res.extents:
                    raise ProtocolError("no block status for context %d" %
                                        cid)
        self.done[res.cookie] = res

    def _take_chunk(self, res, flags, rtype, payload):
        if rtype == REPLY_TYPE_NONE:
            if payload:
                raise ProtocolError("NONE chunk with payload")
            if not flags & REPLY_FLAG_DONE:
                raise ProtocolError("NONE chunk without DONE")
        elif rtype in (REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE):
            if res.cmd != CMD_READ:
                raise ProtocolError("content chunk for a non-READ request")
            if rtype == REPLY_TYPE_OFFSET_DATA:
                if len(payload) < 9:
                    raise ProtocolError("OFFSET_DATA of %d bytes" %
                                        len(payload))
                off = struct.unpack(">Q", payload[:8])[0]
                n = len(payload) - 8
            else:
                if len(payload) != 12:
                    raise ProtocolError("OFFSET_HOLE of %d bytes" %
                                        len(payload))
                off, n = struct.unpack(">QI", payload)
                if n == 0:
                    raise ProtocolError("empty hole")
            if off < res.offset or off + n > res.offset + res.length:
                raise ProtocolError("chunk %d+%d outside request %d+%d" %
                                    (off, n, res.offset, res.length))
            for s, e in self._read_cov[res.cookie]:
                if off < e and s < off + n:
                    raise ProtocolError("overlapping content chunks")
            self._read_cov[res.cookie].append((off, off + n))
            if res.data is None:
                res.data = bytearray(res.length)
            if rtype == REPLY_TYPE_OFFSET_DATA:
                res.data[off - res.offset:off - res.offset + n] = payload[8:]
        elif rtype == REPLY_TYPE_BLOCK_STATUS:
            if self.extended:
                raise ProtocolError("compact block status on an extended "
                                    "connection")
            if res.cmd != CMD_BLOCK_STATUS:
                raise ProtocolError("block status for another command")
            if len(payload) < 12 or (len(payload) - 4) % 8:
                raise ProtocolError("BLOCK_STATUS of %d bytes" %
                                    len(payload))
            cid = struct.unpack(">I", payload[:4])[0]
            ext = [struct.unpack(">II", payload[i:i + 8])
                   for i in range(4, len(payload), 8)]
            self._take_extents(res, cid, ext)
        elif rtype == REPLY_TYPE_BLOCK_STATUS_EXT:
            if not self.extended:
                raise ProtocolError("BLOCK_STATUS_EXT without extended "
                                    "headers")
            if res.cmd != CMD_BLOCK_STATUS:
                raise ProtocolError("block status for another command")
            if len(payload) < 24 or (len(payload) - 8) % 16:
                raise ProtocolError("BLOCK_STATUS_EXT of %d bytes" %
                                    len(payload))
            cid, count = struct.unpack(">II", payload[:8])
            ext = [struct.unpack(">QQ", payload[i:i + 16])
                   for i in range(8, len(payload), 16)]
            if count != len(ext):
                raise ProtocolError("descriptor count %d, %d present" %
                                    (count, len(ext)))
            self._take_extents(res, cid, ext)
        elif rtype & (1 << 15):
            if len(payload) < 6:
                raise ProtocolError("error chunk of %d bytes" % len(payload))
            err, mlen = struct.unpack(">IH", payload[:6])
            if err == 0:
                raise ProtocolError("error chunk with error 0")
            tail = len(payload) - 6 - mlen
            if rtype == REPLY_TYPE_ERROR and tail != 0:
                raise ProtocolError("ERROR chunk length mismatch")
            if rtype == REPLY_TYPE_ERROR_OFFSET:
                if tail != 8:
                    raise ProtocolError("ERROR_OFFSET length mismatch")
                eoff = struct.unpack(">Q", payload[-8:])[0]
                if not res.offset <= eoff < res.offset + max(res.length, 1):
                    raise ProtocolError("error offset outside request")
            res.messages.append(payload[6:6 + mlen].decode(errors="replace"))
            if res.error == 0:
                res.error = err
        else:
            raise ProtocolError("unknown chunk type %d" % rtype)

    def _take_extents(self, res, cid, ext):
        if cid not in self.contexts.values():
            raise ProtocolError("block status for unknown context %d" % cid)
        if cid in res.extents:
            raise ProtocolError("two block status chunks for context %d" %
                                cid)
        if not ext:
            raise ProtocolError("block status without descriptors")
        for n, _ in ext:
            if n == 0:
                raise ProtocolError("zero-length extent")
        if sum(n for n, _ in ext[:-1]) >= max(res.length, 1):
            raise ProtocolError("extents before the last exceed the request")
        res.extents[cid] = ext

    def read_message(self):
        """Read one reply message (simple reply or chunk) and file it under
        its request.  Checks that its kind fits what was negotiated."""
        magic = struct.unpack(">I", self.recv_exact(4))[0]
        if magic == SIMPLE_REPLY_MAGIC:
            err, cookie = struct.unpack(">IQ", self.recv_exact(12))
            if self.extended:
                raise ProtocolError("simple reply on an extended connection")
            res = self.pending.get(cookie)
            if res is None:
                raise ProtocolError("simple reply for unknown cookie %d" %
                                    cookie)
            if self.structured and res.cmd == CMD_READ:
                raise ProtocolError("simple reply to READ with structured "
                                    "replies")
            res.simple = True
            res.error = err
            res.chunks.append((magic, 0, None, None))
            if res.cmd == CMD_READ and err == 0:
                res.data = bytearray(self.recv_exact(res.length))
            self._finish(res)
            return res
        if magic == STRUCT_REPLY_MAGIC:
            flags, rtype, cookie, length = struct.unpack(
                ">HHQI", self.recv_exact(16))
            hoff = None
            if not self.structured:
                raise ProtocolError("structured reply not negotiated")
            if self.extended:
                raise ProtocolError("compact chunk on an extended "
                                    "connection")
        elif magic == EXT_REPLY_MAGIC:
            flags, rtype, cookie, hoff, length = struct.unpack(
                ">HHQQQ", self.recv_exact(28))
            if not self.extended:
                raise ProtocolError("extended reply not negotiated")
        else:
            raise ProtocolError("bad reply magic 0x%08x" % magic)
        res = self.pending.get(cookie)
        if res is None:
            raise ProtocolError("chunk for unknown cookie %d" % cookie)
        if hoff is not None and hoff != res.offset:
            raise ProtocolError("extended reply offset %d, request offset "
                                "%d" % (hoff, res.offset))
        if length > MAX_PAYLOAD + 64:
            raise ProtocolError("chunk payload of %d bytes" % length)
        payload = self.recv_exact(length) if length else b""
        res.chunks.append((magic, flags, rtype, hoff))
        self._take_chunk(res, flags, rtype, payload)
        if flags & REPLY_FLAG_DONE:
            self._finish(res)
        return res

    def reply(self, cookie):
        """Read messages until the reply to cookie is complete."""
        while cookie not in self.done:
            if cookie not in self.pending:
                raise KeyError("cookie %d was never sent" % cookie)
            self.read_message()
        res = self.done.pop(cookie)
        if res.cmd == CMD_READ and res.error == 0 and res.data is not None:
            res.data = bytes(res.data)
        return res

    def request(self, cmd, offset=0, length=0, flags=0, payload=b""):
        """Send one request and wait for its whole reply."""
        return self.reply(self.send_request(cmd, offset, length, flags,
                                            payload))

    def read(self, offset, length, flags=0):
        res = self.request(CMD_READ, offset, length, flags)
        if res.error == 0 and res.data is None and length == 0:
            res.data = b""
        return res

    def write(self, offset, data, flags=0):
        return self.request(CMD_WRITE, offset, len(data), flags, data)

    def disconnect(self):
        """NBD_CMD_DISC: no reply; the server closes."""
        self.send_request(CMD_DISC, expect_reply=False)


# ---- running diskserve -------------------------------------------------

def diskserve_path():
    """The diskserve binary of this build tree."""
    top = os.environ.get("abs_top_builddir")
    if not top:
        top = os.path.abspath(os.path.join(os.path.dirname(__file__),
                                           "..", ".."))
    return os.path.join(top, "diskserve")


_scratch = None
_servers = []


def scratch():
    """A scratch directory removed at exit."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.mkdtemp(prefix="ds-proto.",
                                    dir=os.environ.get("TMPDIR"))
    return _scratch


def _cleanup():
    for s in _servers:
        s.kill()
    if _scratch is not None:
        shutil.rmtree(_scratch, ignore_errors=True)


atexit.register(_cleanup)


def make_image(name, size, fill=None):
    """A raw image file of size bytes, sparse unless fill (bytes repeated
    over the first len(fill) * k bytes) is given.  Returns its path."""
    path = os.path.join(scratch(), name)
    with open(path, "wb") as f:
        if fill:
            f.write(fill)
        f.truncate(size)
    return path


def pattern(offset, length, seed=0):
    """Bytes that name their own offset: every 8 bytes hold (offset ^
    seed) big-endian, so misplaced data is told apart."""
    start = offset - offset % 8
    words = range(start, offset + length + 8, 8)
    b = b"".join(struct.pack(">Q", (w ^ seed) & (2**64 - 1)) for w in words)
    return b[offset - start:offset - start + length]


def free_tcp_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tcp_connect(port, server):
    """A Conn to 127.0.0.1:port, retried for 10 s while server (a Server
    also listening on TCP) is alive but not yet listening."""
    deadline = time.monotonic() + 10
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect(("127.0.0.1", port))
            return Conn(s)
        except ConnectionRefusedError:
            s.close()
            if time.monotonic() > deadline or not server.alive():
                raise
            time.sleep(0.02)


class Server:
    """diskserve on a Unix socket in the scratch directory."""

    def __init__(self, image, *args, name="ds"):
        self.name = name
        self.sock_path = os.path.join(scratch(), name + ".sock")
        self.log_path = os.path.join(scratch(), name + ".log")
        exe = diskserve_path()
        if not os.access(exe, os.X_OK):
            raise AssertionError("%s not built" % exe)
        self.argv = [exe, "-k", self.sock_path] + list(args) + [image]
        self.log = open(self.log_path, "wb")
        self.stopped = False
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=self.log,
                                     stderr=subprocess.STDOUT)
        _servers.append(self)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock_path):
            if self.proc.poll() is not None:
                raise AssertionError("diskserve exited with %d:\n%s" %
                                     (self.proc.returncode, self.log_text()))
            if time.monotonic() > deadline:
                raise AssertionError("socket %s did not appear" %
                                     self.sock_path)
            time.sleep(0.02)

    def connect(self):
        # The socket file exists from bind(), a moment before listen():
        # a refusal in that window is retried, briefly.
        deadline = time.monotonic() + 5
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.sock_path)
                return Conn(s)
            except ConnectionRefusedError:
                s.close()
                if time.monotonic() > deadline or not self.alive():
                    raise
                time.sleep(0.01)

    def alive(self):
        return self.proc.poll() is None

    def log_text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def vm_peak_kib(self):
        """The server's peak virtual size (VmPeak) in KiB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1])
        raise AssertionError("no VmPeak for pid %d" % self.proc.pid)

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("diskserve ignored SIGTERM for 10 s")
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# Lines a sanitizer build prints when it finds a bug.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:")


def _fail(msg):
    print("FAIL: %s" % msg)
    for s in _servers:
        sys.stdout.write("---- %s log ----\n%s" % (s.name, s.log_text()))
    sys.exit(1)


def run(*tests):
    """Run each test function in turn; print ok/FAIL lines and exit 1 at
    the first failure (with the logs of the servers it started).  At the
    end every server still running must be alive, stop cleanly on
    SIGTERM, and have logged no sanitizer report."""
    for t in tests:
        name = t.__name__.replace("_", " ")
        try:
            t()
        except Exception:
            traceback.print_exc()
            _fail(name)
        print("ok: %s" % name)
        sys.stdout.flush()
    for s in _servers:
        if not s.stopped and not s.alive():
            _fail("server %s died" % s.name)
        if not s.stopped:
            try:
                rc = s.stop()
            except AssertionError as e:
                _fail(str(e))
            if rc != 0:
                _fail("server %s exited with %d on SIGTERM" % (s.name, rc))
        log = s.log_text()
        for mark in SANITIZER_MARKS:
            if mark in log:
                _fail("server %s logged %r" % (s.name, mark))
