#!/usr/bin/python3
"""Read and change fields of a VHDX file for the tests, fixing checksums.

    vhdxpoke.py region IMG bat|metadata       -> "OFFSET LENGTH ENTRYOFFSET"
                                                 (from region table 1)
    vhdxpoke.py item IMG NAME                 -> file offset of a metadata
                        item (file_param, disk_size, page83, logical, physical)
    vhdxpoke.py set IMG OFFSET FMT VALUE      struct.pack('<'+FMT) at OFFSET
    vhdxpoke.py fix IMG header1|header2|region1|region2
                                              recompute that CRC-32C
    vhdxpoke.py crc32c STRING                 CRC-32C of STRING, hex

A plain bitwise CRC-32C: slow, but the tests checksum at most 64 KB at a
time, and it is independent of the driver's (ISA-L).
"""
import struct
import sys
import uuid

from vhdxcrc import crc32c


GUIDS = {
    'bat': '2DC27766-F623-4200-9D64-115E9BFD4A08',
    'metadata': '8B7CA206-4790-4B9A-B8FE-575F050F886E',
    'file_param': 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B',
    'disk_size': '2FA54224-CD1B-4876-B211-5DBED83BF4B8',
    'page83': 'BECA12AB-B2E6-4523-93EF-C309E000C746',
    'logical': '8141BF1D-A96F-4709-BA47-F233A8FAAB5F',
    'physical': 'CDA348C7-445D-4471-9CC9-E9885251C556',
}

def guid(name):
    return uuid.UUID(GUIDS[name]).bytes_le

STRUCTS = {'header1': (64 << 10, 4096), 'header2': (128 << 10, 4096),
           'region1': (192 << 10, 65536), 'region2': (256 << 10, 65536)}

def region(f, name):
    f.seek(192 << 10)
    t = f.read(65536)
    count = struct.unpack_from('<I', t, 8)[0]
    for i in range(count):
        e = 16 + 32 * i
        if t[e:e + 16] == guid(name):
            off, length = struct.unpack_from('<QI', t, e + 16)
            return off, length, (192 << 10) + e
    raise SystemExit('no region ' + name)

def item(f, name):
    moff = region(f, 'metadata')[0]
    f.seek(moff)
    t = f.read(65536)
    count = struct.unpack_from('<H', t, 10)[0]
    for i in range(count):
        e = 32 + 32 * i
        if t[e:e + 16] == guid(name):
            return moff + struct.unpack_from('<I', t, e + 16)[0]
    raise SystemExit('no item ' + name)

def main():
    cmd, img = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
    if cmd == 'crc32c':
        print('%08x' % crc32c(sys.argv[2].encode()))
        return
    with open(img, 'r+b') as f:
        if cmd == 'region':
            print('%d %d %d' % region(f, sys.argv[3]))
        elif cmd == 'item':
            print(item(f, sys.argv[3]))
        elif cmd == 'set':
            off, fmt, val = int(sys.argv[3], 0), sys.argv[4], sys.argv[5]
            f.seek(off)
            if fmt == 'guid':
                f.write(uuid.UUID(val).bytes_le)
            else:
                f.write(struct.pack('<' + fmt, int(val, 0)))
        elif cmd == 'fix':
            off, length = STRUCTS[sys.argv[3]]
            f.seek(off)
            data = bytearray(f.read(length))
            data[4:8] = b'\0\0\0\0'
            f.seek(off + 4)
            f.write(struct.pack('<I', crc32c(bytes(data))))
        else:
            raise SystemExit('unknown command ' + cmd)

main()
