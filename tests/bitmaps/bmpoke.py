#!/usr/bin/python3
"""Bitmap directory pokes for the malformed-bitmap tests.

  bmpoke.py show IMAGE                    print the extension and each
                                          entry (index name table_offset
                                          table_size flags gran entry_at)
  bmpoke.py ext IMAGE FIELD VALUE         set a bitmaps extension field:
                                          nb_bitmaps reserved dir_size
                                          dir_offset
  bmpoke.py entry IMAGE I FIELD VALUE     set a field of directory entry I:
                                          table_offset table_size flags
                                          type gran name_size extra_size
  bmpoke.py table IMAGE I J VALUE         set entry J of bitmap I's table
  bmpoke.py name IMAGE I NAME             overwrite entry I's name (same
                                          length)
  bmpoke.py autoclear IMAGE VALUE         set the autoclear feature bits

Numbers may be decimal or 0x hex.  Only images qemu-img wrote are
poked; this is a test tool, not a qcow2 implementation.
"""
import struct
import sys

EXT_BITMAPS = 0x23852875
EXT_FIELDS = {'nb_bitmaps': (0, '>I'), 'reserved': (4, '>I'),
              'dir_size': (8, '>Q'), 'dir_offset': (16, '>Q')}
ENTRY_FIELDS = {'table_offset': (0, '>Q'), 'table_size': (8, '>I'),
                'flags': (12, '>I'), 'type': (16, '>B'),
                'gran': (17, '>B'), 'name_size': (18, '>H'),
                'extra_size': (20, '>I')}


def find_ext(f):
    """File offset of the bitmaps extension's data."""
    f.seek(0)
    h = f.read(112)
    cluster = 1 << struct.unpack_from('>I', h, 20)[0]
    pos = struct.unpack_from('>I', h, 100)[0]
    f.seek(0)
    buf = f.read(cluster)
    while pos + 8 <= cluster:
        t, n = struct.unpack_from('>II', buf, pos)
        if t == 0:
            break
        if t == EXT_BITMAPS:
            return pos + 8
        pos += 8 + ((n + 7) & ~7)
    sys.exit('no bitmaps extension')


def entries(f):
    at = find_ext(f)
    f.seek(at)
    nb, _, size, off = struct.unpack('>IIQQ', f.read(24))
    f.seek(off)
    d = f.read(size)
    pos, out = 0, []
    for _ in range(nb):
        toff, tsize, flags, typ, gran, nlen, extra = \
            struct.unpack_from('>QIIBBHI', d, pos)
        name = d[pos + 24 + extra:pos + 24 + extra + nlen].decode()
        out.append((name, toff, tsize, flags, gran, off + pos))
        pos += (24 + extra + nlen + 7) & ~7
    return out


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    with open(path, 'r+b') as f:
        if cmd == 'show':
            print('ext', find_ext(f))
            for i, e in enumerate(entries(f)):
                print(i, *e)
        elif cmd == 'ext':
            o, fmt = EXT_FIELDS[args[0]]
            f.seek(find_ext(f) + o)
            f.write(struct.pack(fmt, int(args[1], 0)))
        elif cmd == 'entry':
            at = entries(f)[int(args[0])][5]
            o, fmt = ENTRY_FIELDS[args[1]]
            f.seek(at + o)
            f.write(struct.pack(fmt, int(args[2], 0)))
        elif cmd == 'table':
            toff = entries(f)[int(args[0])][1]
            f.seek(toff + 8 * int(args[1]))
            f.write(struct.pack('>Q', int(args[2], 0)))
        elif cmd == 'name':
            e = entries(f)[int(args[0])]
            f.seek(e[5] + 18)
            nlen, = struct.unpack('>H', f.read(2))
            extra, = struct.unpack('>I', f.read(4))
            new = args[1].encode()
            assert len(new) == nlen, 'same length only'
            f.seek(e[5] + 24 + extra)
            f.write(new)
        elif cmd == 'autoclear':
            f.seek(88)
            f.write(struct.pack('>Q', int(args[0], 0)))
        else:
            sys.exit('unknown command ' + cmd)


main()
