#!/usr/bin/python3
"""Oracles for the VHDX tests.

    vhdx-check.py pyvhdi IMG RAW [SECTOR]
        libvhdi (independent of QEMU and of us) reads IMG; its size and
        every byte must equal RAW, and its bytes per sector SECTOR.
    vhdx-check.py map MAP RAW BLOCKSIZE dynamic|fixed
        MAP is `nbdinfo --map` output for a VHDX that `qemu-img convert`
        made from RAW.  Expected: in a fixed file every block is data; in
        a dynamic one a block is data exactly when RAW holds a non-zero
        byte in it (convert writes nothing else), and the rest is
        hole,zero.
"""
import sys

CHUNK = 1 << 20

def cmd_pyvhdi(img, raw, sector=None):
    import pyvhdi
    f = pyvhdi.file()
    f.open(img)
    with open(raw, 'rb') as r:
        r.seek(0, 2)
        size = r.tell()
        if f.get_media_size() != size:
            raise SystemExit('%s: libvhdi size %d, raw %d'
                             % (img, f.get_media_size(), size))
        if sector and f.get_bytes_per_sector() != int(sector):
            raise SystemExit('%s: libvhdi bytes per sector %d, want %s'
                             % (img, f.get_bytes_per_sector(), sector))
        r.seek(0)
        off = 0
        while off < size:
            n = min(CHUNK, size - off)
            got = f.read_buffer_at_offset(n, off)
            if got != r.read(n):
                raise SystemExit('%s: libvhdi reads different bytes in '
                                 '[%d, %d)' % (img, off, off + n))
            off += n
    f.close()

def merge(exts):
    out = []
    for start, length, hole in exts:
        if out and out[-1][2] == hole and out[-1][0] + out[-1][1] == start:
            out[-1][1] += length
        else:
            out.append([start, length, hole])
    return out

def cmd_map(mapfile, raw, bs, kind):
    bs = int(bs)
    got = []
    for line in open(mapfile):
        start, length, typ = (int(x) for x in line.split()[:3])
        got.append((start, length, typ & 1))
    want = []
    with open(raw, 'rb') as r:
        r.seek(0, 2)
        size = r.tell()
        r.seek(0)
        off = 0
        while off < size:
            n = min(bs, size - off)
            data = r.read(n)
            hole = 0 if kind == 'fixed' or data.count(0) != n else 1
            want.append((off, n, hole))
            off += n
    got, want = merge(got), merge(want)
    if got != want:
        raise SystemExit('map differs:\n got  %s\n want %s' % (got, want))

cmds = {'pyvhdi': cmd_pyvhdi, 'map': cmd_map}
cmds[sys.argv[1]](*sys.argv[2:])
