#!/usr/bin/python3
"""Seeds for fuzz-requests: a flags byte (bit 0 extended headers, bits
1-2 the image: raw, qcow2 64 KiB, 512 B, 16 KiB extended L2), then
request headers and write payloads, for every image and header kind.

    make-requests-corpus.py OUT
"""
import os
import struct
import sys

READ, WRITE, DISC, FLUSH, TRIM, CACHE, ZEROES, STATUS = range(8)
FUA, NO_HOLE, REQ_ONE, FAST_ZERO = 1, 2, 8, 16


def req(ext, typ, off, length, flags=0, cookie=1):
    if ext:
        return struct.pack('>IHHQQQ', 0x21e41c71, flags, typ, cookie, off,
                           length)
    return struct.pack('>IHHQQI', 0x25609513, flags, typ, cookie, off,
                       length)


def write(ext, off, length, seed, flags=0):
    body = bytes((i * 7 + seed) & 0xff | 1 for i in range(length))
    return req(ext, WRITE, off, length, flags) + body


def session(ext):
    k = 64 * 1024
    return b''.join([
        write(ext, 0, 4096, 1),
        write(ext, k - 512, 1024, 2, FUA),
        write(ext, 3 * k + 100, 9000, 3),
        req(ext, READ, 0, 2 * k),
        req(ext, ZEROES, 4096, 8192),
        req(ext, ZEROES, 2 * k, k, NO_HOLE),
        req(ext, ZEROES, 5 * k, 3 * k, FAST_ZERO),
        req(ext, TRIM, 3 * k, k),
        req(ext, STATUS, 0, 8 * k),
        req(ext, STATUS, 0, 8 * k, REQ_ONE),
        write(ext, 1024 * 1024 - 300, 600, 4),
        req(ext, CACHE, 0, k),
        req(ext, FLUSH, 0, 0),
        req(ext, READ, 0, 1024 * 1024 + 4096),
        req(ext, STATUS, 4 * 1024 * 1024 - k, k),
        req(ext, DISC, 0, 0),
    ])


def main(argv):
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    names = ['raw', 'qcow2-64k', 'qcow2-512', 'qcow2-ext-l2']
    for kind, name in enumerate(names):
        for ext in (0, 1):
            flags = bytes([ext | kind << 1])
            path = os.path.join(out, '%s-%s' % (name,
                                               'extended' if ext else
                                               'compact'))
            with open(path, 'wb') as f:
                f.write(flags + session(ext))


if __name__ == '__main__':
    main(sys.argv)
