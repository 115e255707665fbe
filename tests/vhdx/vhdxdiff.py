#!/usr/bin/python3
"""Write a differencing VHDX (a child) over an existing VHDX parent.

    vhdxdiff.py CHILD PARENT RELPATH SEED LAYOUT PARENT_RAW CHILD_RAW [OPT...]

CHILD is created (overwritten); PARENT is read for its current header's
DataWriteGuid (the child's parent_linkage) and its geometry (virtual disk
size, block size, sector sizes), which the child copies.  RELPATH is the
locator's relative_path as written ('/' become '\\'); it is not checked.

LAYOUT has one letter per payload block (missing letters: N):
    F  FULLY_PRESENT, seeded random data
    P  PARTIALLY_PRESENT: seeded random sector bitmap (runs of 1-64
       sectors), random data in every sector of the block, so that a
       reader that ignores the bitmap reads the wrong bytes
    N  NOT_PRESENT     U  UNDEFINED (both: the parent's data)
    Z  ZERO            M  UNMAPPED  (both: zeros)
Sector bitmap blocks are written (SB_BLOCK_PRESENT) for chunks holding a
P block; other sector bitmap entries are NOT_PRESENT.

PARENT_RAW is the parent chain's guest content; CHILD_RAW receives the
content the child must read as (the shadow).

OPT:
    linkage=GUID     parent_linkage GUID instead of the parent's
    linkage2=GUID    also write a parent_linkage2 entry
    abs=PATH         absolute_win32_path "\\\\?\\C:" + PATH ('/' -> '\\')
    norel            no relative_path entry

CRC-32C is a plain table implementation, independent of the driver's.
"""
import random
import struct
import sys
import uuid

from vhdxcrc import crc32c

MB = 1 << 20
BAT_GUID = uuid.UUID('2DC27766-F623-4200-9D64-115E9BFD4A08').bytes_le
META_GUID = uuid.UUID('8B7CA206-4790-4B9A-B8FE-575F050F886E').bytes_le
FILE_PARAM = uuid.UUID('CAA16737-FA36-4D43-B3B6-33F0AA44E76B').bytes_le
DISK_SIZE = uuid.UUID('2FA54224-CD1B-4876-B211-5DBED83BF4B8').bytes_le
PAGE83 = uuid.UUID('BECA12AB-B2E6-4523-93EF-C309E000C746').bytes_le
LOGICAL = uuid.UUID('8141BF1D-A96F-4709-BA47-F233A8FAAB5F').bytes_le
PHYSICAL = uuid.UUID('CDA348C7-445D-4471-9CC9-E9885251C556').bytes_le
PARENT_LOC = uuid.UUID('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C').bytes_le
VHDX_LOCATOR = uuid.UUID('B04AEFB7-D19E-4A81-B789-25B8E9445913').bytes_le
STATES = {'N': 0, 'U': 1, 'Z': 2, 'M': 3, 'F': 6, 'P': 7}




def with_crc(buf):
    """buf (checksum at bytes 4-7, zero) with its CRC-32C filled in."""
    buf = bytearray(buf)
    buf[4:8] = struct.pack('<I', crc32c(bytes(buf)))
    return bytes(buf)


def parent_info(path):
    """(DataWriteGuid bytes, disk size, block size, logical, physical)."""
    with open(path, 'rb') as f:
        best = None
        for off in (64 << 10, 128 << 10):
            f.seek(off)
            h = f.read(4096)
            if h[:4] != b'head':
                continue
            seq = struct.unpack_from('<Q', h, 8)[0]
            if best is None or seq > best[0]:
                best = (seq, h[32:48])
        f.seek(192 << 10)
        rt = f.read(64 << 10)
        count = struct.unpack_from('<I', rt, 8)[0]
        meta = None
        for i in range(count):
            g, off, _length = struct.unpack_from('<16sQI', rt, 16 + 32 * i)
            if g == META_GUID:
                meta = off
        f.seek(meta)
        mt = f.read(64 << 10)
        items = {}
        for i in range(struct.unpack_from('<H', mt, 10)[0]):
            g, off, length = struct.unpack_from('<16sII', mt, 32 + 32 * i)
            f.seek(meta + off)
            items[g] = f.read(length)
    return (best[1], struct.unpack('<Q', items[DISK_SIZE][:8])[0],
            struct.unpack('<I', items[FILE_PARAM][:4])[0],
            struct.unpack('<I', items[LOGICAL][:4])[0],
            struct.unpack('<I', items[PHYSICAL][:4])[0])


def locator(pairs):
    """The parent locator item for [(key, value)]."""
    strings = b''
    entries = b''
    base = 20 + 12 * len(pairs)
    for k, v in pairs:
        kb, vb = k.encode('utf-16-le'), v.encode('utf-16-le')
        entries += struct.pack('<IIHH', base + len(strings),
                               base + len(strings) + len(kb), len(kb),
                               len(vb))
        strings += kb + vb
    return (VHDX_LOCATOR + struct.pack('<HH', 0, len(pairs)) + entries +
            strings)


def main():
    child, parent, relpath, seed, layout, praw, craw = sys.argv[1:8]
    opts = dict(o.split('=', 1) if '=' in o else (o, '')
                for o in sys.argv[8:])
    r = random.Random(int(seed))
    dwg, size, bs, lss, pss = parent_info(parent)
    linkage = opts.get('linkage') or str(uuid.UUID(bytes_le=dwg))
    pairs = [('parent_linkage', '{%s}' % linkage.lower())]
    if 'linkage2' in opts:
        pairs.append(('parent_linkage2', '{%s}' % opts['linkage2'].lower()))
    if 'norel' not in opts:
        pairs.append(('relative_path', relpath.replace('/', '\\')))
    pairs.append(('volume_path', '\\\\?\\Volume{26a21bda-a627-11d7-9931-'
                  '806e6f6e6963}\\nowhere\\parent.vhdx'))
    if 'abs' in opts:
        pairs.append(('absolute_win32_path',
                      '\\\\?\\C:' + opts['abs'].replace('/', '\\')))

    spb = bs // lss                     # sectors per block
    cr = (1 << 23) * lss // bs          # chunk ratio
    blocks = (size + bs - 1) // bs
    chunks = (blocks + cr - 1) // cr
    nbat = chunks * (cr + 1)
    bat_len = (nbat * 8 + MB - 1) // MB * MB
    log_off, meta_off, bat_off = MB, 2 * MB, 3 * MB
    end = bat_off + bat_len
    bat = [0] * nbat
    with open(praw, 'rb') as f:
        shadow = bytearray(f.read())
    assert len(shadow) == size, (len(shadow), size)
    layout = layout.ljust(blocks, 'N')[:blocks]

    with open(child, 'wb') as f:
        bitmaps = {}
        for n, c in enumerate(layout):
            i = n + n // cr
            lo, hi = n * bs, min(size, (n + 1) * bs)
            if c in 'NU':
                bat[i] = STATES[c]
                continue
            if c in 'ZM':
                bat[i] = STATES[c]
                shadow[lo:hi] = bytes(hi - lo)
                continue
            data = r.randbytes(bs)
            f.seek(end)
            f.write(data)
            bat[i] = end | STATES[c]
            end += bs
            if c == 'F':
                shadow[lo:hi] = data[:hi - lo]
                continue
            bm = bitmaps.setdefault(n // cr, bytearray(MB))
            s, bit = 0, r.random() < 0.5
            while s < spb:
                run = r.randint(1, 64)
                for k in range(s, min(spb, s + run)):
                    if bit:
                        g = (n % cr) * spb + k
                        bm[g // 8] |= 1 << (g % 8)
                        a = lo + k * lss
                        if a < hi:
                            shadow[a:a + lss] = data[k * lss:(k + 1) * lss]
                s += run
                bit = not bit
        for k, bm in sorted(bitmaps.items()):
            f.seek(end)
            f.write(bm)
            bat[k * (cr + 1) + cr] = end | 6
            end += MB

        f.seek(0)
        f.write(b'vhdxfile' + 'vhdxdiff.py'.encode('utf-16-le'))
        fwg, dwg_child = uuid.uuid4().bytes_le, uuid.uuid4().bytes_le
        for seq, off in ((1, 64 << 10), (2, 128 << 10)):
            h = struct.pack('<4sIQ16s16s16sHHIQ', b'head', 0, seq, fwg,
                            dwg_child, bytes(16), 0, 1, MB, log_off)
            f.seek(off)
            f.write(with_crc(h.ljust(4096, b'\0')))
        rt = struct.pack('<4sIII', b'regi', 0, 2, 0)
        rt += struct.pack('<16sQII', BAT_GUID, bat_off, bat_len, 1)
        rt += struct.pack('<16sQII', META_GUID, meta_off, MB, 1)
        rt = with_crc(rt.ljust(64 << 10, b'\0'))
        for off in (192 << 10, 256 << 10):
            f.seek(off)
            f.write(rt)

        items = [(FILE_PARAM, struct.pack('<II', bs, 2), 4),
                 (DISK_SIZE, struct.pack('<Q', size), 6),
                 (PAGE83, uuid.UUID(int=r.getrandbits(128)).bytes_le, 6),
                 (LOGICAL, struct.pack('<I', lss), 6),
                 (PHYSICAL, struct.pack('<I', pss), 6),
                 (PARENT_LOC, locator(pairs), 4)]
        table = struct.pack('<8sHH20s', b'metadata', 0, len(items),
                            bytes(20))
        pos = 64 << 10
        for g, data, flags in items:
            table += struct.pack('<16sIIII', g, pos, len(data), flags, 0)
            f.seek(meta_off + pos)
            f.write(data)
            pos += (len(data) + 7) // 8 * 8
        f.seek(meta_off)
        f.write(table)
        f.seek(bat_off)
        f.write(struct.pack('<%dQ' % nbat, *bat))
        f.truncate(max(end, bat_off + bat_len))
    with open(craw, 'wb') as f:
        f.write(shadow)


main()
