#!/usr/bin/python3
"""Crash-test workload: a seeded mix of writes, zero writes, trims,
flushes and FUA requests over one NBD connection, several in flight, and
a record of what happened for crash-check.

Every 512-byte sector a write carries names its request and its sector
(see sector_data), so any sector read back can be attributed.  Requests
in flight never overlap, so the requests touching one sector are totally
ordered.  The record (--out) is text:

    seed S
    size BYTES
    req ID COOKIE KIND OFFSET LENGTH FUA ISSUE COMPLETE ERRNO

KIND is write, zero, trim or flush; ISSUE and COMPLETE number the
issue and completion events in one sequence, so "a FLUSH covers every
write that completed before it was issued" is COMPLETE < the flush's
ISSUE; a FUA request covers itself.  COOKIE is libnbd's, which the
server's marks in the I/O log carry.

A write, zero write or trim goes to a random place (the hot window or
anywhere) or, with probability --seq, to a cursor that walks the disk
from --seq-start, each such request starting where the last one ended
(--seq-sectors long).  A driver then allocates host clusters in long
runs at the end of its file; with lengths of whole L2 spans these runs
cross refcount-block ranges, and random requests in between shift where.
"""

import argparse
import random
import struct
import sys

import nbd

SECTOR = 512
MAGIC = b"DSCRASH1"
M64 = (1 << 64) - 1
K1, K2, K3 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9


def sector_data(req_id, sector, seed):
    """The 512 bytes request req_id writes to sector (crash-check.c
    computes the same)."""
    a = (req_id * K1) & M64
    b = (sector * K2) & M64
    words = [a ^ b ^ ((i * K3) & M64) for i in range(4, 64)]
    return (MAGIC + struct.pack("<QQQ", req_id, sector, seed) +
            struct.pack("<60Q", *words))


class Req:
    def __init__(self, rid, kind, sector, count, fua):
        self.id = rid
        self.kind = kind
        self.sector = sector
        self.count = count
        self.fua = fua
        self.cookie = 0
        self.issue = -1
        self.complete = -1
        self.err = -1
        self.buf = None


def parse_mix(text):
    mix = []
    for item in text.split(","):
        kind, weight = item.split(":")
        if kind not in ("write", "zero", "trim", "flush"):
            raise SystemExit("workload: unknown kind %r in --mix" % kind)
        mix.append((kind, float(weight)))
    return mix


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--mix", default="write:60,zero:8,trim:8,flush:10",
                    help="KIND:WEIGHT,... over write, zero, trim, flush")
    ap.add_argument("--fua", type=float, default=0.12,
                    help="probability that a write, zero or trim has FUA")
    ap.add_argument("--max-sectors", type=int, default=8)
    ap.add_argument("--big", type=float, default=0.1,
                    help="probability of a long request")
    ap.add_argument("--big-sectors", type=int, default=40)
    ap.add_argument("--hot", type=float, default=0.5,
                    help="probability of aiming at the hot window")
    ap.add_argument("--hot-bytes", type=int, default=64 * 1024)
    ap.add_argument("--align", type=int, default=1,
                    help="offsets and lengths are multiples of this many "
                    "sectors (a file's logical sector size)")
    ap.add_argument("--seq", type=float, default=0.0,
                    help="probability that a write, zero or trim goes to "
                    "the sequential cursor")
    ap.add_argument("--seq-start", type=int, default=0,
                    help="byte offset where the cursor starts, and where "
                    "it wraps to at the end of the disk")
    ap.add_argument("--seq-sectors", default="64",
                    help="N,N,...: lengths a sequential request draws "
                    "from (repeat one to weight it)")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    mix = parse_mix(args.mix)
    kinds = [k for k, _ in mix]
    weights = [w for _, w in mix]

    h = nbd.NBD()
    h.connect_uri(args.uri)
    size = h.get_size()
    nsec = size // SECTOR
    hot = max(1, min(nsec, args.hot_bytes // SECTOR))
    seq_start = args.seq_start // SECTOR
    seq_lens = [int(n) for n in args.seq_sectors.split(",")]
    if (args.seq_start % SECTOR or seq_start >= nsec or
            min(seq_lens) < 1):
        raise SystemExit("workload: bad --seq-start or --seq-sectors")
    cursor = seq_start
    state = {"events": 0, "max_inflight": 0}
    inflight = {}
    reqs = []

    def on_done(req, err):
        req.complete = state["events"]
        state["events"] += 1
        req.err = err.value
        req.buf = None
        del inflight[req.id]
        return 1

    def overlaps(req):
        for o in inflight.values():
            if (o.kind != "flush" and req.sector < o.sector + o.count and
                    o.sector < req.sector + req.count):
                return True
        return False

    for rid in range(1, args.requests + 1):
        kind = rng.choices(kinds, weights)[0]
        count = 0
        sector = 0
        fua = False
        if kind != "flush" and args.seq > 0 and rng.random() < args.seq:
            sector = cursor
            count = min(rng.choice(seq_lens), nsec - sector)
            cursor = sector + count
            if cursor >= nsec:
                cursor = seq_start
            fua = rng.random() < args.fua
        elif kind != "flush":
            if rng.random() < args.big:
                count = rng.randint(args.max_sectors + 1, args.big_sectors)
            else:
                count = rng.randint(1, args.max_sectors)
            span = hot if rng.random() < args.hot else nsec
            count = -(-count // args.align) * args.align
            count = min(count, span)
            sector = rng.randrange(0, span - count + 1)
            sector -= sector % args.align
            fua = rng.random() < args.fua
        req = Req(rid, kind, sector, count, fua)
        while len(inflight) >= args.inflight or overlaps(req):
            h.poll(-1)

        flags = nbd.CMD_FLAG_FUA if fua else 0
        off = sector * SECTOR
        req.issue = state["events"]
        state["events"] += 1
        inflight[rid] = req

        def done(err, req=req):
            return on_done(req, err)

        if kind == "write":
            data = b"".join(sector_data(rid, sector + i, args.seed)
                            for i in range(count))
            req.buf = nbd.Buffer.from_bytearray(bytearray(data))
            req.cookie = h.aio_pwrite(req.buf, off, completion=done,
                                      flags=flags)
        elif kind == "zero":
            if rng.random() < 0.5:
                flags |= nbd.CMD_FLAG_NO_HOLE
            req.cookie = h.aio_zero(count * SECTOR, off, completion=done,
                                    flags=flags)
        elif kind == "trim":
            req.cookie = h.aio_trim(count * SECTOR, off, completion=done,
                                    flags=flags)
        else:
            req.cookie = h.aio_flush(completion=done)
        reqs.append(req)
        state["max_inflight"] = max(state["max_inflight"], len(inflight))

    while inflight:
        h.poll(-1)
    h.shutdown()

    with open(args.out, "w") as f:
        f.write("seed %d\nsize %d\n" % (args.seed, size))
        for r in reqs:
            f.write("req %d %d %s %d %d %d %d %d %d\n" % (
                r.id, r.cookie, r.kind, r.sector * SECTOR, r.count * SECTOR,
                1 if r.fua else 0, r.issue, r.complete, r.err))

    counts = {k: sum(1 for r in reqs if r.kind == k) for k in kinds}
    if args.seq > 0:
        print("workload: sequential cursor from %d, ended at %d" % (
            seq_start * SECTOR, cursor * SECTOR))
    failed = sum(1 for r in reqs if r.err != 0)
    print("workload: seed %d, %d requests (%s), %d with FUA, %d failed, "
          "up to %d in flight" % (
              args.seed, len(reqs),
              ", ".join("%d %s" % (counts[k], k) for k in kinds),
              sum(1 for r in reqs if r.fua), failed, state["max_inflight"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
