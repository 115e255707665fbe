#!/usr/bin/python3
"""Seeded write workload for the qcow2 write tests, with a shadow.

Drives one NBD export (several requests in flight, never two that
overlap, many in the same clusters) with writes, zero writes (with and
without NO_HOLE, sometimes FAST_ZERO), trims and flushes, and applies
each one to SHADOW, a raw file of the export's size holding what the
disk held before.  A write's bytes name the request and their offset, so
data in the wrong place cannot read back right.  At the end the whole
export is read back and compared with the shadow.

A zero write that fails with ENOTSUP (FAST_ZERO) changes nothing; a trim
reads back as zeros.

Usage: qcow2-write-workload.py URI SHADOW [options]
"""

import argparse
import errno
import random
import struct
import sys

import nbd


def pattern(rid, off, n, seed):
    """n bytes naming request rid and the offsets they are written to."""
    first = off - off % 8
    words = [(rid << 40) ^ (seed << 56) ^ o
             for o in range(first, off + n + 8, 8)]
    raw = struct.pack(">%dQ" % len(words), *[w & (2**64 - 1)
                                              for w in words])
    return raw[off - first:off - first + n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("uri")
    ap.add_argument("shadow")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=400)
    ap.add_argument("--mix", default="write:70,zero:12,trim:8,flush:4")
    ap.add_argument("--max-len", type=int, default=96 << 10)
    ap.add_argument("--align", type=int, default=1,
                    help="offsets and lengths are multiples of this")
    ap.add_argument("--hot", type=int, default=256 << 10,
                    help="bytes at the start that half the requests hit "
                    "(0: none)")
    ap.add_argument("--start", type=int, default=0,
                    help="requests stay at or above this offset")
    ap.add_argument("--end", type=int, default=0,
                    help="requests end before this offset (0: the end of "
                    "the export); with it, only [start, end) is read back, "
                    "so several clients can share one export and shadow")
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--fast-zero", type=float, default=0.2)
    ap.add_argument("--fua", type=float, default=0.05)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    kinds, weights = [], []
    for item in args.mix.split(","):
        k, w = item.split(":")
        kinds.append(k)
        weights.append(int(w))

    h = nbd.NBD()
    # Unaligned requests on purpose, also where the server prefers
    # whole sectors (encrypted images).
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)
    # Unaligned requests on purpose: do not promise the server to keep
    # its block size constraints, so it serves them.
    h.set_request_block_size(False)
    h.connect_uri(args.uri)
    size = h.get_size()
    end = args.end or size
    check_lo = args.start if args.end else 0
    can_fast_zero = h.can_fast_zero()
    shadow = open(args.shadow, "r+b")
    inflight = {}
    counts = dict((k, 0) for k in kinds)
    counts["enotsup"] = 0
    errors = []

    def done(rid, err):
        kind, off, n, data = inflight.pop(rid)
        if err.value == errno.ENOTSUP and kind == "fastzero":
            counts["enotsup"] += 1
            return 1
        if err.value:
            errors.append("%s %d+%d failed: %s" % (kind, off, n,
                                                  errno.errorcode.get(
                                                      err.value)))
            return 1
        if data is not None:
            shadow.seek(off)
            shadow.write(data)
        return 1

    def overlaps(off, n):
        for _, o, m, _ in inflight.values():
            if off < o + m and o < off + n:
                return True
        return False

    for rid in range(1, args.ops + 1):
        kind = rng.choices(kinds, weights)[0]
        counts[kind] += 1
        if kind == "flush":
            while len(inflight) >= args.inflight:
                h.poll(-1)
            inflight[rid] = ("flush", 0, 0, None)
            h.aio_flush(completion=lambda err, rid=rid: done(rid, err))
            continue
        span_lo = args.start
        span_hi = end
        if args.hot > 0 and rng.random() < 0.5:
            span_hi = min(end, args.start + args.hot)
        n = rng.randint(1, args.max_len // args.align) * args.align
        n = min(n, span_hi - span_lo)
        off = rng.randrange(span_lo, span_hi - n + 1)
        off -= off % args.align
        while len(inflight) >= args.inflight or overlaps(off, n):
            h.poll(-1)
        flags = nbd.CMD_FLAG_FUA if rng.random() < args.fua else 0
        cb = (lambda err, rid=rid: done(rid, err))
        if kind == "write":
            data = pattern(rid, off, n, args.seed)
            inflight[rid] = ("write", off, n, data)
            h.aio_pwrite(data, off, completion=cb, flags=flags)
        elif kind == "zero":
            if rng.random() < 0.5:
                flags |= nbd.CMD_FLAG_NO_HOLE
            name = "zero"
            if can_fast_zero and rng.random() < args.fast_zero:
                flags |= nbd.CMD_FLAG_FAST_ZERO
                name = "fastzero"
            inflight[rid] = (name, off, n, bytes(n))
            h.aio_zero(n, off, completion=cb, flags=flags)
        else:
            inflight[rid] = ("trim", off, n, bytes(n))
            h.aio_trim(n, off, completion=cb, flags=flags)
    while inflight:
        h.poll(-1)
    h.flush()
    if errors:
        print("FAIL: %s" % "; ".join(errors[:5]), file=sys.stderr)
        return 1

    # Read everything back and compare with the shadow.
    shadow.flush()
    step = 1 << 20
    for off in range(check_lo, end, step):
        n = min(step, end - off)
        got = h.pread(n, off)
        shadow.seek(off)
        want = shadow.read(n)
        if got != want:
            i = next(i for i in range(n) if got[i] != want[i])
            print("FAIL: byte %d reads 0x%02x, the shadow has 0x%02x" % (
                off + i, got[i], want[i]), file=sys.stderr)
            return 1
    h.shutdown()
    print("workload: seed %d, %s, %d fast zeroes refused" % (
        args.seed, ", ".join("%d %s" % (counts[k], k) for k in kinds),
        counts["enotsup"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
