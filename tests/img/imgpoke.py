#!/usr/bin/python3
"""Read and change single qcow2 metadata fields in place, for tests that
build broken images on purpose.

    imgpoke.py FILE header                     print the header fields
    imgpoke.py FILE refcount CLUSTER [VALUE]   get or set a refcount
    imgpoke.py FILE l1 INDEX [VALUE]           get or set an active L1 entry
    imgpoke.py FILE l2 GUEST_OFFSET [VALUE]    get or set the L2 entry
                                               mapping a guest offset
    imgpoke.py FILE reftable INDEX [VALUE]     get or set a refcount table
                                               entry
    imgpoke.py FILE l1-bit INDEX BIT 0|1       clear or set one bit of an
                                               L1 entry
    imgpoke.py FILE l2-bit GUEST_OFFSET BIT 0|1   the same for an L2 entry
    imgpoke.py FILE host-cluster GUEST_OFFSET  host cluster index of a
                                               guest offset (standard
                                               cluster)
    imgpoke.py FILE l2-cluster INDEX           cluster index of the L2 table
                                               of an L1 entry
    imgpoke.py FILE block-cluster INDEX        cluster index of a refcount
                                               block

Numbers are decimal or 0x-prefixed hex; entries print as hex, refcounts
and cluster indexes as decimal.
"""
import struct
import sys

HDR = '>IIQIIQIIQQIIQQQQII'
OFFSET_MASK = 0x00fffffffffffe00
NAMES = ('magic version backing_file_offset backing_file_size cluster_bits '
         'size crypt_method l1_size l1_table_offset refcount_table_offset '
         'refcount_table_clusters nb_snapshots snapshots_offset '
         'incompatible compatible autoclear refcount_order '
         'header_length').split()


class Image:
    def __init__(self, path):
        self.f = open(path, 'r+b')
        raw = self.f.read(104)
        h = dict(zip(NAMES, struct.unpack(HDR, raw)))
        if h['version'] == 2:
            h['refcount_order'] = 4
            h['incompatible'] = 0
        self.h = h
        self.cs = 1 << h['cluster_bits']
        self.ext_l2 = bool(h['incompatible'] & 16)
        self.l2_entry = 16 if self.ext_l2 else 8

    def u64(self, off, value=None):
        self.f.seek(off)
        if value is None:
            return struct.unpack('>Q', self.f.read(8))[0]
        self.f.write(struct.pack('>Q', value))
        return value

    def reftable(self, index, value=None):
        return self.u64(self.h['refcount_table_offset'] + 8 * index, value)

    def refcount(self, cluster, value=None):
        order = self.h['refcount_order']
        bits = 1 << order
        per_block = self.cs * 8 // bits
        block = self.reftable(cluster // per_block) & ~0x1ff
        if not block:
            if value is None:
                return 0
            raise SystemExit('no refcount block for cluster %d' % cluster)
        i = cluster % per_block
        if bits < 8:
            bit = i * bits
            self.f.seek(block + bit // 8)
            byte = self.f.read(1)[0]
            mask = ((1 << bits) - 1) << (bit % 8)
            if value is None:
                return (byte & mask) >> (bit % 8)
            byte = (byte & ~mask) | ((value << (bit % 8)) & mask)
            self.f.seek(block + bit // 8)
            self.f.write(bytes([byte]))
            return value
        n = bits // 8
        self.f.seek(block + i * n)
        if value is None:
            return int.from_bytes(self.f.read(n), 'big')
        self.f.write(value.to_bytes(n, 'big'))
        return value

    def l1(self, index, value=None):
        return self.u64(self.h['l1_table_offset'] + 8 * index, value)

    def l2_entry_offset(self, guest):
        l2_entries = self.cs // self.l2_entry
        cluster = guest // self.cs
        l2 = self.l1(cluster // l2_entries) & OFFSET_MASK
        if not l2:
            raise SystemExit('no L2 table for guest offset %d' % guest)
        return l2 + (cluster % l2_entries) * self.l2_entry

    def l2(self, guest, value=None):
        return self.u64(self.l2_entry_offset(guest), value)


def num(s):
    return int(s, 0) & (1 << 64) - 1


def main():
    img = Image(sys.argv[1])
    cmd = sys.argv[2]
    args = [num(a) for a in sys.argv[3:]]
    if cmd == 'header':
        for k in NAMES:
            print('%s %d' % (k, img.h[k]))
    elif cmd == 'refcount':
        print(img.refcount(*args))
    elif cmd == 'l1':
        print('0x%x' % img.l1(*args))
    elif cmd == 'l2':
        print('0x%x' % img.l2(*args))
    elif cmd == 'reftable':
        print('0x%x' % img.reftable(*args))
    elif cmd == 'l1-bit':
        index, bit, on = args
        v = img.l1(index)
        img.l1(index, v | (1 << bit) if on else v & ~(1 << bit))
    elif cmd == 'l2-bit':
        guest, bit, on = args
        v = img.l2(guest)
        img.l2(guest, v | (1 << bit) if on else v & ~(1 << bit))
    elif cmd == 'host-cluster':
        print((img.l2(args[0]) & OFFSET_MASK) // img.cs)
    elif cmd == 'l2-cluster':
        print((img.l1(args[0]) & OFFSET_MASK) // img.cs)
    elif cmd == 'block-cluster':
        print((img.reftable(args[0]) & ~0x1ff) // img.cs)
    else:
        raise SystemExit('unknown command ' + cmd)


if __name__ == '__main__':
    main()
