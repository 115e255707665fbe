#!/usr/bin/python3
"""Acknowledged qcow2 writes, each judged on a copy of the image.

  qcow2-ackcopy.py prepare IMAGE CLUSTER_SIZE REFCOUNT_BITS
      Create IMAGE with qemu-img and print "SIZE FRESH": its virtual size
      and the guest offset from which nothing is allocated.  When a
      refcount block covers more host bytes than the writes can fill
      cheaply, the first FRESH bytes are preallocated (metadata only, the
      file stays sparse) so that the host file ends a few clusters before
      a refcount range boundary.

  qcow2-ackcopy.py run URI IMAGE SHADOW COPY FRESH --seed N --name NAME
      Send writes to the export one at a time, never a flush, and after
      each one is acknowledged copy IMAGE (the server still running) to
      COPY and run qemu-img check on the copy: exit 0 or 3 (leaks) passes,
      anything else fails, with the write, the geometry, the host
      clusters it took and qemu-img's output.  SHADOW (raw, the export's
      size, zeros at first) gets every write.

Where the writes go: the host file grows at the allocator's frontier,
which this script finds in the copy (the last cluster holding a nonzero
byte; every write's data is nonzero and new data lands after the L2
table that maps it).  Filler writes move the frontier to a chosen
cluster, so that the next write's run of new clusters starts at, ends
at or crosses a refcount range boundary (one refcount block covers
cluster_size * 8 / refcount_bits clusters), makes a new L2 table the
first or the last cluster of a range, or, with 64-bit refcounts, covers
a whole range so that the range's new block lands in the next range,
which has no block either.  Sequential and random writes follow, and
last, where that takes a few MiB, writes past the end of what the
refcount table covers, so that it moves.  At the end the script checks
that the writes did what they were placed for: new refcount blocks
exist, one outside its range where that was aimed for, and the refcount
table moved where that was aimed for; otherwise the test would pass
without testing anything.
"""

import argparse
import errno
import os
import random
import struct
import subprocess
import sys

import nbd

MiB = 1 << 20
# diskserve allocates at most this much in one step (write.c).
MAX_RUN_BYTES = 32 * MiB
# Bytes of guest data one geometry may write, and what a single write
# may be (except one that fills an L2 span), so that copies stay cheap:
# each copy reads the whole file.
BUDGET_BYTES = 10 * MiB
MAX_WRITE = 4 * MiB
# The refcount table is made to grow, last, when that takes at most this
# much more.
GROWTH_BYTES = 20 * MiB


def log2(n):
    b = n.bit_length() - 1
    if n != 1 << b:
        sys.exit("%d is not a power of two" % n)
    return b


class Geometry:
    """Cluster size and refcount width, and what follows from them."""

    def __init__(self, cluster_bits, refcount_order):
        self.cb = cluster_bits
        self.c = 1 << cluster_bits
        self.bits = 1 << refcount_order
        # Clusters one refcount block covers, and guest clusters one L2
        # table maps (8-byte entries: no extended L2 here).
        self.e = 1 << (cluster_bits + 3 - refcount_order)
        self.l2 = self.c // 8
        self.span = self.l2 * self.c
        # Longest run of new clusters one allocation takes.
        self.max_run = min(self.l2, MAX_RUN_BYTES // self.c)

    def __str__(self):
        return ("cluster_size=%d refcount_bits=%d: a refcount block "
                "covers %d clusters (%d host bytes), an L2 table maps %d "
                "clusters (%d guest bytes)" % (
                    self.c, self.bits, self.e, self.e * self.c, self.l2,
                    self.span))


def header(path):
    """(cluster_bits, refcount_order, reftable offset, reftable entries)"""
    with open(path, "rb") as f:
        h = f.read(104)
        cb = struct.unpack_from(">I", h, 20)[0]
        rt_off, rt_clusters = struct.unpack_from(">QI", h, 48)
        order = struct.unpack_from(">I", h, 96)[0]
        f.seek(rt_off)
        n = (rt_clusters << cb) // 8
        table = struct.unpack(">%dQ" % n, f.read(n * 8))
    return cb, order, rt_off, table


def census(path):
    """The refcount table's place and its blocks: {range: host offset}."""
    _, _, rt_off, table = header(path)
    return rt_off, len(table), dict((i, v) for i, v in enumerate(table)
                                    if v)


def frontier_in(path, c, floor):
    """The first cluster past the last one of path that holds a nonzero
    byte, or floor if that is larger."""
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = max(0, (floor - 1) * c)
        extents = []
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            pos = os.lseek(fd, d, os.SEEK_HOLE)
            extents.append((d, pos))
        for d, end in reversed(extents):
            while end > d:
                n = min(end - d, MiB)
                f.seek(end - n)
                data = f.read(n).rstrip(b"\0")
                if data:
                    return max(floor, (end - n + len(data) - 1) // c + 1)
                end -= n
    return floor


def qemu_img(*args):
    subprocess.run(["qemu-img"] + list(args), check=True)


def prepare(args):
    c = args.cluster_size
    g = Geometry(log2(c), log2(args.refcount_bits))
    opts = "cluster_size=%d,refcount_bits=%d" % (c, g.bits)
    # Room for fresh L2 tables: 64 of them, 64 MiB at least.
    fresh_bytes = max(64 * MiB, 64 * g.span)
    qemu_img("create", "-q", "-f", "qcow2", "-o", opts, args.image,
             str(fresh_bytes))
    start = -(-os.path.getsize(args.image) // c)
    boundary = (start // g.e + 1) * g.e
    if (boundary - start) * c <= 8 * MiB:
        print(fresh_bytes, 0)
        return 0
    # Preallocate metadata for guest bytes [0, pre) so that the file ends
    # "margin" clusters before a boundary, then make the disk larger.
    # Each L2 table maps g.l2 data clusters and takes one itself.
    margin = max(40, min(g.e // 4, MiB // c))
    want = boundary - margin
    pre = (want - start) * g.l2 // (g.l2 + 1) * c
    for _ in range(8):
        qemu_img("create", "-q", "-f", "qcow2", "-o",
                 opts + ",preallocation=metadata", args.image, str(pre))
        qemu_img("resize", "-q", "-f", "qcow2", args.image,
                 str(pre + fresh_bytes))
        end = -(-os.path.getsize(args.image) // c)
        if boundary - 2 * margin <= end < boundary - 2:
            break
        step = (want - end) * g.l2 // (g.l2 + 1)
        pre += (step or (1 if want > end else -1)) * c
    print(pre + fresh_bytes, pre)
    return 0


class Run:
    def __init__(self, args):
        self.args = args
        self.name = args.name
        self.image = args.image
        self.copy = args.copy
        cb, order, _, _ = header(args.image)
        self.g = Geometry(cb, order)
        self.rng = random.Random("%d/%d/%d" % (args.seed, self.g.c,
                                               self.g.bits))
        self.h = nbd.NBD()
        # Unaligned requests on purpose.
        self.h.set_strict_mode(self.h.get_strict_mode() & ~nbd.STRICT_ALIGN)
        self.h.set_request_block_size(False)
        self.h.connect_uri(args.uri)
        self.size = self.h.get_size()
        self.shadow = open(args.shadow, "r+b")
        # diskserve's frontier at open: the end of the file.
        self.floor = -(-os.path.getsize(args.image) // self.g.c)
        self.writes = 0
        self.bytes = 0
        self.limit = BUDGET_BYTES
        # Fresh guest L2 spans, taken in order from FRESH on.
        self.next_span = -(-args.fresh // self.g.span) * self.g.span
        # A span whose L2 table exists, for filler writes, and another
        # for the writes placed at a boundary: (guest offset, clusters
        # used).
        self.fill = None
        self.ready = None
        self.before = census(args.image)
        self.snapshot()
        self.aimed_outside = False
        self.aimed_growth = False
        self.scenarios = {}

    # ---- writing and judging ----

    def fail(self, msg, out=""):
        g = self.g
        print("FAIL: %s: %s" % (self.name, msg), file=sys.stderr)
        print("  geometry: %s" % g, file=sys.stderr)
        print("  seed %d (SEED=%d replays)" % (self.args.seed,
                                               self.args.seed),
              file=sys.stderr)
        if out:
            print("  qemu-img check on the copy says:", file=sys.stderr)
            for line in out.rstrip().split("\n"):
                print(("    " + line).rstrip(), file=sys.stderr)
        sys.exit(1)

    def frontier(self):
        self.floor = frontier_in(self.copy, self.g.c, self.floor)
        return self.floor

    def snapshot(self):
        subprocess.run(["cp", "--sparse=always", self.image, self.copy],
                       check=True)

    def write(self, off, n, what):
        """Write n bytes at guest offset off, then judge a copy."""
        g = self.g
        if off < 0 or n <= 0 or off + n > self.size:
            raise ValueError("write %d+%d outside the disk" % (off, n))
        data = self.rng.randbytes(n)
        if n < 64:
            data = data.replace(b"\0", b"\x5a")
        f0 = self.floor
        self.writes += 1
        self.bytes += n
        try:
            self.h.pwrite(data, off)
        except nbd.Error as e:
            self.fail("write %d (%s: %d bytes at guest offset 0x%x) "
                      "failed: %s" % (self.writes, what, n, off, e))
        self.shadow.seek(off)
        self.shadow.write(data)
        self.snapshot()
        p = subprocess.run(["qemu-img", "check", "-f", "qcow2", self.copy],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
        f1 = self.frontier()
        if p.returncode not in (0, 3):
            self.fail(
                "write %d (%s: %d bytes at guest offset 0x%x), "
                "acknowledged with no flush since the image was opened, "
                "leaves an image that qemu-img check rejects (exit %d); "
                "the host frontier went from cluster %d (refcount range "
                "%d) to %d (range %d)" % (
                    self.writes, what, n, off, p.returncode, f0, f0 // g.e,
                    f1, f1 // g.e), p.stdout)

    def write_clusters(self, span, first, k, what):
        self.write(span + first * self.g.c, k * self.g.c, what)

    def fresh_span(self):
        off = self.next_span
        if off + self.g.span > self.size:
            self.fail("out of fresh L2 spans (the disk is too small)")
        self.next_span += self.g.span
        return off

    def room(self, which):
        return self.g.l2 - which[1] if which else 0

    def take(self, name, k, what):
        """Write k clusters into the fill or ready span (L2 table exists,
        the clusters are unallocated)."""
        span, used = getattr(self, name)
        self.write_clusters(span, used, k, what)
        setattr(self, name, (span, used + k))

    def open_span(self, name, k, what):
        """Start a new fill or ready span: its L2 table and k clusters."""
        span = self.fresh_span()
        self.write_clusters(span, 0, k, what)
        setattr(self, name, (span, k))

    def left(self):
        return self.limit - self.bytes

    # ---- placing the frontier ----

    def aim(self, target):
        """Make the next cluster the allocator takes be target, with
        filler writes.  False when that cannot be done cheaply (or was
        overshot: clusters freed below the frontier may take writes)."""
        g = self.g
        for _ in range(24):
            f = self.frontier()
            d = target - f
            if d == 0:
                return True
            if d < 0 or d * g.c > self.left():
                return False
            if d > 2 * (g.l2 + 1) and g.span <= MAX_WRITE:
                # Far: whole fresh spans (an L2 table and its clusters
                # each), short of the target.
                n = min(d // (g.l2 + 1) - 1, MAX_WRITE // g.span)
                off = self.fresh_span()
                self.next_span += (n - 1) * g.span
                self.write(off, n * g.span, "filler, whole L2 spans")
            elif self.room(self.fill) > 0:
                self.take("fill", min(d, self.room(self.fill),
                                      MAX_WRITE // g.c), "filler")
            elif d >= 2:
                self.open_span("fill", min(d - 1, g.l2,
                                           MAX_WRITE // g.c),
                               "filler, new L2 table")
            else:
                return False
        return False

    def ensure_ready(self, k):
        """A span with k free clusters whose L2 table exists."""
        if self.room(self.ready) < k:
            self.open_span("ready", 1, "new L2 table for the next write")

    # ---- the phases ----

    def span_fits(self):
        """Whether one write can allocate a whole L2 span in one run."""
        g = self.g
        return g.l2 <= g.max_run and g.span <= self.left()

    def scenario(self, kind):
        """One write of the given kind at the nearest refcount range
        boundary the frontier can be moved to.  True when done, False
        when the aim failed, None when the budget is spent."""
        g, rng = self.g, self.rng
        small = max(1, min(g.l2 - 1, g.e - 1, 16))
        f = self.frontier()
        near = -(-(f + 1) // g.e) * g.e - f - 2
        if near > 2 and (near + g.e) * g.c > self.left():
            # Only the nearest boundary is affordable: stay short of it.
            small = min(small, (near - 1) // 2)
        # back: the aim is the cluster that many before boundary b.
        # Where the L2 table must exist, it is made first.
        if kind == "run-starts-at-boundary":
            k = rng.randint(1, small)
            back = 0
            self.ensure_ready(k)
        elif kind == "run-ends-at-boundary":
            k = rng.randint(1, small)
            back = k
            self.ensure_ready(k)
        elif kind == "run-crosses-boundary":
            back = rng.randint(1, small)
            k = min(g.l2 - 1, back + rng.randint(1, small))
            self.ensure_ready(k)
        elif kind == "l2-table-first-in-range":
            k = rng.randint(1, small)
            back = 0
        elif kind == "l2-table-last-before-range":
            k = rng.randint(1, small)
            back = 1
        elif kind == "l2-span-fills-range":
            # An L2 table at b - 1, then one run of g.l2 clusters from b:
            # with 64-bit refcounts exactly the range, so its new
            # refcount block lands in the next range, which needs one
            # too.
            k = g.l2
            back = 1
        elif kind == "write-crosses-l2-and-range":
            # Guest: the last x clusters of one span and the first y of
            # the next, so two new L2 tables; host: the second table
            # lands on b, or the second run starts at or crosses it.
            x = rng.randint(1, small)
            y = rng.randint(1, small)
            back = x + 1 + rng.randint(0, y)
            k = x + y + 2
        else:
            raise ValueError(kind)
        f = self.frontier()
        b = -(-(f + back) // g.e) * g.e
        if (b - back - f + k) * g.c > self.left():
            return None
        if not self.aim(b - back):
            return False
        if kind.startswith("run-"):
            self.take("ready", k, kind)
        elif kind.startswith("l2-table-"):
            self.write_clusters(self.fresh_span(), 0, k, kind)
        elif kind == "l2-span-fills-range":
            self.write(self.fresh_span(), g.span, kind)
            if g.l2 >= g.e:
                self.aimed_outside = True
        else:
            span = self.fresh_span()
            self.fresh_span()
            self.write_clusters(span, g.l2 - x, x + y, kind)
        self.scenarios[kind] = self.scenarios.get(kind, 0) + 1
        return True

    def boundaries(self, max_writes):
        kinds = ["run-starts-at-boundary", "run-ends-at-boundary",
                 "run-crosses-boundary", "l2-table-first-in-range",
                 "l2-table-last-before-range",
                 "write-crosses-l2-and-range"]
        self.rng.shuffle(kinds)
        g = self.g
        if g.l2 <= g.max_run and g.span > self.left():
            # One such write is worth more than the budget (16 KiB
            # clusters: 32 MiB).
            self.limit = self.bytes + g.span + 2 * MiB
        if self.span_fits():
            # First, and again in every round: with 64-bit refcounts it
            # puts a block outside its range.
            kinds.insert(0, "l2-span-fills-range")
            kinds.insert(4, "l2-span-fills-range")
        else:
            kinds.insert(0, kinds.pop(kinds.index("run-crosses-boundary")))
        i = misses = 0
        while self.writes < max_writes and misses < 6:
            done = self.scenario(kinds[i % len(kinds)])
            if done is None:
                break
            if done:
                misses = 0
            else:
                misses += 1
            i += 1

    def pass_cluster(self, t, what):
        """Write whole fresh spans until the frontier is past cluster t
        (or the budget is spent): the placed writes missed it."""
        g = self.g
        n = min(g.span, MAX_WRITE)
        while self.frontier() <= t and self.left() >= n:
            self.write(self.fresh_span(), n, what)

    def growth(self):
        """Make the refcount table move: allocate the first cluster past
        what it covers."""
        g = self.g
        _, entries, _ = census(self.copy)
        t = entries * g.e
        f = self.frontier()
        if t <= f or (t - f) * g.c > GROWTH_BYTES:
            return False
        self.aimed_growth = True
        self.limit = max(self.limit, self.bytes + GROWTH_BYTES + 2 * g.span)
        if self.span_fits():
            if self.aim(t - 1):
                self.write(self.fresh_span(), g.span,
                           "l2-span-fills-range past the refcount table")
        else:
            k = min(g.l2 - 1, 8)
            self.ensure_ready(k)
            if self.aim(t - 1):
                self.take("ready", k, "run past the refcount table")
        self.pass_cluster(t, "write past the refcount table")
        return True

    def sequential(self, n):
        g = self.g
        length = min(g.span, 128 << 10)
        off = self.fresh_span()
        for i in range(n):
            if off + length > self.size:
                break
            self.write(off, length, "sequential %d" % (i + 1))
            off += length
        self.next_span = -(-off // g.span) * g.span

    def random(self, n):
        g, rng = self.g, self.rng
        for i in range(n):
            r = rng.random()
            if r < 0.4:
                length = rng.randint(1, 2 * g.c)
            elif r < 0.8:
                length = rng.randint(1, min(g.span, 256 << 10))
            else:
                length = rng.randint(1, min(3 * g.span, MiB))
            if self.left() < length:
                length = rng.randint(1, 2 * g.c)
            r = rng.random()
            if r < 0.3:
                # Across an L2 span boundary.
                spans = self.size // g.span
                b = rng.randint(1, max(1, spans - 1)) * g.span
                off = b - rng.randint(1, min(length, b))
            elif r < 0.5:
                # Among what was written already.
                off = rng.randint(0, max(0, self.next_span - length))
            else:
                off = rng.randint(0, self.size - length)
            off = max(0, min(off, self.size - length))
            self.write(off, length, "random %d" % (i + 1))

    # ---- the end ----

    def coverage(self):
        """That the writes reached what they were placed for."""
        g = self.g
        rt0, _, blocks0 = self.before
        rt1, entries, blocks1 = census(self.copy)
        new = dict((i, v) for i, v in blocks1.items()
                   if blocks0.get(i) != v)
        outside = [i for i, v in new.items()
                   if (v >> g.cb) // g.e != i]
        print("%s: %d writes, %d bytes; refcount blocks %d -> %d (%d "
              "outside their range), refcount table %s; placed: %s" % (
                  self.name, self.writes, self.bytes, len(blocks0),
                  len(blocks1), len(outside),
                  "moved (%d entries)" % entries if rt1 != rt0
                  else "in place",
                  ", ".join("%s x%d" % kv
                            for kv in sorted(self.scenarios.items()))))
        if not new:
            self.fail("no write made a new refcount block: the writes "
                      "no longer reach a refcount range boundary")
        if self.aimed_outside and not outside:
            self.fail("no new refcount block lies outside its range, "
                      "though whole ranges were filled in one run")
        if self.aimed_growth and rt1 == rt0:
            self.fail("the refcount table did not move, though writes "
                      "went past its end")

    def run(self):
        self.boundaries(max_writes=60)
        if not self.scenarios:
            b = self.frontier() // self.g.e * self.g.e + self.g.e
            self.pass_cluster(b, "write past a refcount range boundary")
        self.sequential(10)
        self.random(20)
        if self.growth():
            self.random(8)
        self.coverage()
        self.h.shutdown()
        return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("image")
    p.add_argument("cluster_size", type=int)
    p.add_argument("refcount_bits", type=int)
    r = sub.add_parser("run")
    r.add_argument("uri")
    r.add_argument("image")
    r.add_argument("shadow")
    r.add_argument("copy")
    r.add_argument("fresh", type=int)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--name", default="image")
    args = ap.parse_args()
    if args.cmd == "prepare":
        return prepare(args)
    return Run(args).run()


if __name__ == "__main__":
    sys.exit(main())
