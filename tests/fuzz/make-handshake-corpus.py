"""Write recorded client byte streams for fuzz-handshake into a directory:
what a client sends from its flags to its last request, built with the
encoders of tests/protocol/nbdraw.py.

    make-handshake-corpus.py DIR
"""

import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "protocol"))
import nbdraw as n  # noqa: E402

CFLAGS = struct.pack(">I", n.FLAG_C_FIXED_NEWSTYLE | n.FLAG_C_NO_ZEROES)


def opt(option, data=b"", length=None, magic=n.IHAVEOPT):
    if length is None:
        length = len(data)
    return struct.pack(">QII", magic, option, length) + data


def req(cmd, offset=0, length=0, flags=0, cookie=1, extended=False,
        payload=b""):
    if extended:
        return struct.pack(">IHHQQQ", n.EXT_REQUEST_MAGIC, flags, cmd,
                           cookie, offset, length) + payload
    return struct.pack(">IHHQQI", n.REQUEST_MAGIC, flags, cmd, cookie,
                       offset, length) + payload


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    go = opt(n.OPT_GO, n.go_data(b"", (n.INFO_EXPORT, n.INFO_BLOCK_SIZE)))
    meta = opt(n.OPT_SET_META_CONTEXT,
               n.meta_data(b"", (b"base:allocation",
                                 b"qemu:allocation-depth",
                                 b"qemu:dirty-bitmap:b0")))
    reqs = (req(n.CMD_WRITE, 0, 8, cookie=1, payload=b"x" * 8) +
            req(n.CMD_READ, 0, 4096, cookie=2) +
            req(n.CMD_FLUSH, cookie=3) +
            req(n.CMD_TRIM, 4096, 4096, cookie=4) +
            req(n.CMD_WRITE_ZEROES, 8192, 4096, flags=n.CMD_FLAG_NO_HOLE,
                cookie=5))
    streams = {
        "export-name": CFLAGS + opt(n.OPT_EXPORT_NAME, b"disk") + reqs +
        req(n.CMD_DISC),
        "go-simple": CFLAGS + go + reqs + req(n.CMD_DISC),
        "list-info-go": CFLAGS + opt(n.OPT_LIST) +
        opt(n.OPT_INFO, n.go_data(b"disk", (n.INFO_NAME,
                                            n.INFO_DESCRIPTION))) + go +
        req(n.CMD_READ, 0, 512),
        "structured-meta": CFLAGS + opt(n.OPT_STRUCTURED_REPLY) +
        opt(n.OPT_LIST_META_CONTEXT, n.meta_data(b"", (b"base:",))) + meta +
        go + req(n.CMD_BLOCK_STATUS, 0, 65536, flags=n.CMD_FLAG_REQ_ONE) +
        req(n.CMD_READ, 0, 512, flags=n.CMD_FLAG_DF) + reqs,
        "extended": CFLAGS + opt(n.OPT_EXTENDED_HEADERS) + meta + go +
        req(n.CMD_BLOCK_STATUS, 0, 1 << 20, extended=True) +
        req(n.CMD_WRITE, 0, 16, flags=n.CMD_FLAG_PAYLOAD_LEN,
            extended=True, payload=b"y" * 16) +
        req(n.CMD_READ, 0, 4096, extended=True),
        "abort": CFLAGS + opt(n.OPT_ABORT),
        "bad-option-magic": CFLAGS + opt(n.OPT_GO, b"", magic=0x1234),
        "go-length-mismatch": CFLAGS + opt(n.OPT_GO, n.go_data(b"a"),
                                           length=3) + b"\0" * 8,
        "unknown-option": CFLAGS + opt(99, b"zz") + opt(n.OPT_STARTTLS) + go,
        "bad-flags": struct.pack(">I", 0xffff),
        "no-flags-then-export": struct.pack(">I", 0) +
        opt(n.OPT_EXPORT_NAME) + req(n.CMD_CACHE, 0, 512, cookie=9),
    }
    for name, data in streams.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
