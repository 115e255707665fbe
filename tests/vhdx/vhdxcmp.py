#!/usr/bin/python3
"""Compare a VHDX file, as libvhdi reads it, with a raw file.

    vhdxcmp.py RAW IMG [PARENT...]

IMG is read through pyvhdi (Debian's python3-libvhdi, an implementation
independent of QEMU and diskserve), with each PARENT set as the parent
of the file before it.  Exits 0 when the media size and every byte are
the same, 1 naming the first differing offset otherwise.
"""
import sys

import pyvhdi


def main():
    files = []
    for p in sys.argv[2:]:
        f = pyvhdi.file()
        f.open(p)
        files.append(f)
    for child, parent in zip(files, files[1:]):
        child.set_parent(parent)
    f = files[0]
    size = f.get_media_size()
    with open(sys.argv[1], "rb") as raw:
        raw.seek(0, 2)
        if raw.tell() != size:
            print("FAIL: libvhdi says %d bytes, the raw file has %d" % (
                size, raw.tell()), file=sys.stderr)
            return 1
        raw.seek(0)
        off = 0
        while off < size:
            n = min(1 << 20, size - off)
            got = f.read_buffer_at_offset(n, off)
            want = raw.read(n)
            if got != want:
                i = next(i for i in range(n) if got[i] != want[i])
                print("FAIL: libvhdi reads byte %d of %s as 0x%02x, the "
                      "raw file has 0x%02x" % (off + i, sys.argv[2], got[i],
                                               want[i]), file=sys.stderr)
                return 1
            off += n
    return 0


if __name__ == "__main__":
    sys.exit(main())
