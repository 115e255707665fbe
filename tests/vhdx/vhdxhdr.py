#!/usr/bin/python3
"""Print both VHDX headers of a file, one line each:

    N valid|invalid SEQ FILEWRITEGUID DATAWRITEGUID LOGGUID

(valid: signature "head" and CRC-32C right; GUIDs in their usual text
form, from the on-disk Microsoft byte order.)

Usage: vhdxhdr.py IMG
"""
import struct
import sys
import uuid

from vhdxcrc import crc32c


def main():
    with open(sys.argv[1], "rb") as f:
        for n, off in ((1, 64 << 10), (2, 128 << 10)):
            f.seek(off)
            raw = f.read(4096)
            sig, csum, seq = struct.unpack_from("<IIQ", raw, 0)
            zeroed = raw[:4] + b"\0" * 4 + raw[8:]
            ok = sig == 0x64616568 and crc32c(zeroed) == csum
            guids = [str(uuid.UUID(bytes_le=raw[o:o + 16])).upper()
                     for o in (16, 32, 48)]
            print(n, "valid" if ok else "invalid", seq, *guids)


if __name__ == "__main__":
    main()
