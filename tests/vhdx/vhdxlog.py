#!/usr/bin/python3
"""Append a pending log to a VHDX file for the log replay tests.

    vhdxlog.py guid IMG GUID
        Write the non-current header as a copy of the current one with
        SequenceNumber + 1 and LogGuid GUID (CRC fixed): the new current
        header says the log holds updates.

    vhdxlog.py entry IMG POS SEQ TAIL GUID FLUSHED LAST [TEAR] DESC...
        Write one log entry at byte POS of the log ([MS-VHDX] 2.3.1):
        SequenceNumber SEQ, Tail TAIL, LogGuid GUID, FlushedFileOffset and
        LastFileOffset (FLUSHED/LAST may be "eof": the file size rounded up
        to 1 MB).  DESC, in order:
          data:FILEOFF:SEED    a data descriptor: 4 KB of seeded random bytes
          bat:INDEX:VALUE      a data descriptor rewriting the 4 KB BAT
                               sector that holds entry INDEX, with VALUE there
          zero:FILEOFF:LEN     a zero descriptor
        TEAR (after the CRC is computed unless said otherwise):
          tear=data    one byte of the first data sector changed
          tear=seq     the first data sector's SequenceLow off by one, CRC
                       recomputed (only the per-sector check catches it)
          tear=crc     the entry checksum off by one
        A wrong LogGuid is just a GUID argument other than the header's.
    vhdxlog.py info IMG      -> "LOGOFFSET LOGLENGTH BATOFFSET FILESIZE"

Writes nothing outside the header slot and the log.  CRC-32C is a plain
table implementation, independent of the driver's (ISA-L).
"""
import os
import random
import struct
import sys
import uuid

from vhdxcrc import crc32c


BAT_GUID = uuid.UUID('2DC27766-F623-4200-9D64-115E9BFD4A08').bytes_le
MB = 1 << 20

def read(f, off, n):
    f.seek(off)
    return f.read(n)

def current_header(f):
    """(slot offset, bytes) of the current header."""
    best = None
    for off in (64 << 10, 128 << 10):
        h = bytearray(read(f, off, 4096))
        stored = struct.unpack_from('<I', h, 4)[0]
        z = bytearray(h)
        z[4:8] = b'\0' * 4
        if h[:4] != b'head' or crc32c(bytes(z)) != stored:
            continue
        seq = struct.unpack_from('<Q', h, 8)[0]
        if best is None or seq > best[2]:
            best = (off, h, seq)
    if best is None:
        raise SystemExit('no valid header')
    return best[0], best[1]

def log_place(f):
    _, h = current_header(f)
    length, off = struct.unpack_from('<IQ', h, 68)
    return off, length

def bat_offset(f):
    t = read(f, 192 << 10, 65536)
    for i in range(struct.unpack_from('<I', t, 8)[0]):
        e = 16 + 32 * i
        if t[e:e + 16] == BAT_GUID:
            return struct.unpack_from('<Q', t, e + 16)[0]
    raise SystemExit('no BAT region')

def set_guid(f, g):
    off, h = current_header(f)
    seq = struct.unpack_from('<Q', h, 8)[0]
    struct.pack_into('<Q', h, 8, seq + 1)
    h[48:64] = uuid.UUID(g).bytes_le
    h[4:8] = b'\0' * 4
    struct.pack_into('<I', h, 4, crc32c(bytes(h)))
    other = (128 << 10) if off == (64 << 10) else (64 << 10)
    f.seek(other)
    f.write(h)

def entry(f, pos, seq, tail, g, flushed, last, descs, tear):
    log_off, log_len = log_place(f)
    size = os.fstat(f.fileno()).st_size
    eof = (size + MB - 1) // MB * MB
    flushed = eof if flushed == 'eof' else int(flushed, 0)
    last = eof if last == 'eof' else int(last, 0)
    dsc, sectors = [], []
    for d in descs:
        kind, a, b = d.split(':')
        a, b = int(a, 0), int(b, 0)
        if kind == 'zero':
            dsc.append(struct.pack('<4sIQQQ', b'zero', 0, b, a, seq))
            continue
        if kind == 'data':
            off = a
            data = random.Random(b).randbytes(4096)
        else:   # bat: entry a of the BAT set to b
            boff = bat_offset(f) + a * 8
            off = boff // 4096 * 4096
            data = bytearray(read(f, off, 4096))
            struct.pack_into('<Q', data, boff - off, b)
            data = bytes(data)
        lead = struct.unpack_from('<Q', data, 0)[0]
        trail = struct.unpack_from('<I', data, 4092)[0]
        dsc.append(struct.pack('<4sIQQQ', b'desc', trail, lead, off, seq))
        sectors.append(b'data' + struct.pack('<I', seq >> 32) +
                       data[8:4092] + struct.pack('<I', seq & 0xFFFFFFFF))
    nd = (64 + 32 * len(dsc) + 4095) // 4096
    length = (nd + len(sectors)) * 4096
    hdr = struct.pack('<4sIIIQII16sQQ', b'loge', 0, length, tail, seq,
                      len(dsc), 0, uuid.UUID(g).bytes_le, flushed, last)
    body = bytearray((hdr + b''.join(dsc)).ljust(nd * 4096, b'\0') +
                     b''.join(sectors))
    if tear == 'seq':
        struct.pack_into('<I', body, nd * 4096 + 4092,
                         ((seq & 0xFFFFFFFF) + 1) & 0xFFFFFFFF)
    struct.pack_into('<I', body, 4, crc32c(bytes(body)))
    if tear == 'data':
        body[nd * 4096 + 100] ^= 0x01
    elif tear == 'crc':
        struct.pack_into('<I', body, 4,
                         (struct.unpack_from('<I', body, 4)[0] + 1) &
                         0xFFFFFFFF)
    assert pos % 4096 == 0 and pos + length <= log_len
    f.seek(log_off + pos)
    f.write(body)

def main():
    cmd, img = sys.argv[1], sys.argv[2]
    with open(img, 'r+b') as f:
        if cmd == 'guid':
            set_guid(f, sys.argv[3])
        elif cmd == 'info':
            lo, ll = log_place(f)
            print(lo, ll, bat_offset(f), os.fstat(f.fileno()).st_size)
        elif cmd == 'entry':
            a = sys.argv[3:]
            pos, seq, tail = int(a[0], 0), int(a[1], 0), int(a[2], 0)
            rest = a[6:]
            tear = None
            if rest and rest[0].startswith('tear='):
                tear = rest.pop(0)[5:]
            entry(f, pos, seq, tail, a[3], a[4], a[5], rest, tear)
        else:
            raise SystemExit('unknown command ' + cmd)

main()
