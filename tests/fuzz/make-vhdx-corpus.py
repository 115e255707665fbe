#!/usr/bin/python3
"""Turn VHDX files into fuzz-vhdx inputs: a flags byte (1: fix the
checksums), then the file's nonzero 512-byte sectors, merged into pieces
of at most 65535 bytes, each written as u32 LE sector, u16 LE length,
bytes (see fuzz-vhdx.c).

    make-vhdx-corpus.py OUT IMAGE...   one input per image, named after it
"""
import os
import struct
import sys


def pieces(data):
    out = bytearray(b'\x01')
    zero = bytes(512)
    n = (len(data) + 511) // 512
    i = 0
    while i < n:
        if data[i * 512:(i + 1) * 512].ljust(512, b'\0') == zero:
            i += 1
            continue
        j = i
        while (j < n and (j - i + 1) * 512 <= 65535 and
               data[j * 512:(j + 1) * 512].ljust(512, b'\0') != zero):
            j += 1
        body = data[i * 512:j * 512]
        out += struct.pack('<IH', i, len(body)) + body
        i = j
    # The file's own end, so that its size survives.
    end = (len(data) + 511) // 512 - 1
    last = data[end * 512:]
    out += struct.pack('<IH', end, len(last)) + last
    return bytes(out)


def main(argv):
    outdir = argv[1]
    os.makedirs(outdir, exist_ok=True)
    for img in argv[2:]:
        with open(img, 'rb') as f:
            data = f.read()
        with open(os.path.join(outdir, os.path.basename(img)), 'wb') as f:
            f.write(pieces(data))


if __name__ == '__main__':
    main(sys.argv)
