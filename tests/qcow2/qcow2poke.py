#!/usr/bin/python3
"""Byte-poking and probing helpers for the malformed-image tests.

  qcow2poke.py set IMAGE OFFSET FMT VALUE   pack VALUE (struct FMT) there
  qcow2poke.py get IMAGE OFFSET FMT         print the value there
  qcow2poke.py l2 IMAGE GUEST_OFFSET        print "FILE_OFFSET VALUE" of
                                            the L2 entry mapping it
  qcow2poke.py feature IMAGE TYPE BIT NAME  rename the first entry of the
                                            feature name table
  qcow2poke.py read URI OFFSET LENGTH       read over NBD: print OK or
                                            the errno name

Numbers may be decimal or 0x hex.  Only fields qemu-img wrote are
touched; this is a test tool, not a qcow2 implementation.
"""
import struct
import sys


def num(s):
    # Shell arithmetic is signed 64-bit: take negatives as two's
    # complement, so $(( (1 << 63) | x )) means what it says.
    v = int(s, 0)
    return v + (1 << 64) if v < 0 else v


def header(f):
    f.seek(0)
    h = f.read(112)
    cluster_bits = struct.unpack_from('>I', h, 20)[0]
    version = struct.unpack_from('>I', h, 4)[0]
    incompat = struct.unpack_from('>Q', h, 72)[0] if version >= 3 else 0
    return {
        'cluster_bits': cluster_bits,
        'l1_offset': struct.unpack_from('>Q', h, 40)[0],
        'header_length': struct.unpack_from('>I', h, 100)[0]
                         if version >= 3 else 72,
        'ext_l2': bool(incompat & 16),
    }


def l2_entry(path, guest):
    with open(path, 'rb') as f:
        h = header(f)
        cb = h['cluster_bits']
        esize = 16 if h['ext_l2'] else 8
        l2_entries = (1 << cb) // esize
        cluster = guest >> cb
        f.seek(h['l1_offset'] + 8 * (cluster // l2_entries))
        l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
        if l2 == 0:
            sys.exit('no L2 table for that offset')
        where = l2 + esize * (cluster % l2_entries)
        f.seek(where)
        return where, struct.unpack('>Q', f.read(8))[0]


def feature(path, ftype, bit, name):
    with open(path, 'r+b') as f:
        h = header(f)
        off = h['header_length']
        f.seek(0)
        data = f.read(1 << h['cluster_bits'])
        while off + 8 <= len(data):
            etype, elen = struct.unpack_from('>II', data, off)
            if etype == 0:
                break
            if etype == 0x6803f857:
                f.seek(off + 8)
                f.write(struct.pack('>BB46s', ftype, bit, name.encode()))
                return
            off += 8 + (elen + 7) // 8 * 8
    sys.exit('no feature name table')


def nbd_read(uri, off, length):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        h.pread(length, off)
        print('OK')
    except nbd.Error as e:
        print(e.errno)
    h.shutdown()


def main(argv):
    cmd = argv[1]
    if cmd == 'set':
        with open(argv[2], 'r+b') as f:
            f.seek(num(argv[3]))
            f.write(struct.pack(argv[4], num(argv[5])))
    elif cmd == 'get':
        with open(argv[2], 'rb') as f:
            f.seek(num(argv[3]))
            fmt = argv[4]
            print(struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0])
    elif cmd == 'l2':
        where, value = l2_entry(argv[2], num(argv[3]))
        print(where, value)
    elif cmd == 'feature':
        feature(argv[2], num(argv[3]), num(argv[4]), argv[5])
    elif cmd == 'read':
        nbd_read(argv[2], num(argv[3]), num(argv[4]))
    else:
        sys.exit('unknown command ' + cmd)


if __name__ == '__main__':
    main(sys.argv)
