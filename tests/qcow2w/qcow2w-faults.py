#!/usr/bin/python3
"""Fault injection into the qcow2 write path (DISKSERVE_FAULT, see
formats/io.h): EIO and ENOSPC at each metadata step.

For each tag (L1, L2, REFCOUNT_BLOCK, REFCOUNT_TABLE, ALLOC,
REFTABLE_GROW, FLUSH, and L1_GROW when --with-l1-grow says the driver
has it) and each errno, a fresh image with 512-byte clusters is served
with TAG:N:ERRNO, and one client writes, a cluster run at a time, into
ranges that need new L2 tables, refcount blocks and file space, flushing
every few writes, until a request fails.  Then:

- the failure is the injected errno or EIO, on a write, zero write or
  flush: the client is told (ALLOC faults come in pairs, since the
  driver retries a failed growth of the file for exactly what it
  needs);
- reads of flushed data in flight on another connection beside each
  request, the failing one included, return that data;
- the server is still running, and a new client, and the first
  connection too, read back every write that was acknowledged and
  flushed before the failure;
- later writes either fail cleanly or land;
- the server stops with status 0, qemu-img check exits 0 or 3 (leaks
  are allowed, corruption is not), and qemu reads every acknowledged and
  flushed write from the image.

A last case fills the disk for good (ALLOC:3+:ENOSPC): every write that
needs space fails with ENOSPC or EIO, while overwrites of allocated
clusters and reads go on.

Usage: qcow2w-faults.py DISKSERVE SCRATCH SEED
"""

import atexit
import errno
import os
import random
import subprocess
import sys
import time

import nbd

CLUSTER = 512
SIZE = 8 << 20
ERRNOS = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC}


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


RUNNING = []


@atexit.register
def stop_all():
    """A failing case leaves no server behind."""
    for proc in RUNNING:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Server:
    """diskserve on image with DISKSERVE_FAULT=spec."""

    def __init__(self, binary, scratch, name, image, spec):
        self.name = name
        self.sock = os.path.join(scratch, name + ".sock")
        self.logfile = os.path.join(scratch, name + ".log")
        env = dict(os.environ, DISKSERVE_FAULT=spec)
        self.proc = subprocess.Popen(
            [binary, "-k", self.sock, "-f", "qcow2", image], env=env,
            stdout=subprocess.DEVNULL, stderr=open(self.logfile, "w"))
        RUNNING.append(self.proc)
        for _ in range(200):
            if os.path.exists(self.sock):
                break
            if self.proc.poll() is not None:
                fail("%s: server exited early:\n%s" % (name, self.log()))
            time.sleep(0.05)
        self.uri = "nbd+unix:///?socket=" + self.sock

    def client(self):
        # The socket file appears at bind, a moment before listen.
        for _ in range(100):
            h = nbd.NBD()
            try:
                h.connect_uri(self.uri)
                return h
            except nbd.Error as e:
                if e.errnum != errno.ECONNREFUSED:
                    raise
                time.sleep(0.05)
        fail("%s: the server does not accept connections" % self.name)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(timeout=30)
        if rc != 0:
            fail("%s: server exited with %d:\n%s" % (self.name, rc,
                                                     self.log()))

    def log(self):
        with open(self.logfile) as f:
            return f.read()


def make_image(scratch, name, prefill=0):
    """A fresh image: 512-byte clusters, 64-bit refcounts (a refcount
    block covers 32 KiB of file, the first refcount table 2 MiB), with
    prefill bytes written at the start by qemu-io."""
    path = os.path.join(scratch, name + ".qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    "cluster_size=%d,refcount_bits=64" % CLUSTER, path,
                    str(SIZE)], check=True)
    if prefill:
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        "write -P 0x33 0 %d" % prefill, path],
                       check=True, stdout=subprocess.DEVNULL)
    return path


def data_for(rng, n):
    return bytes(rng.getrandbits(8) for _ in range(16)) * (n // 16)


def qemu_img_check(name, image):
    p = subprocess.run(["qemu-img", "check", image], capture_output=True,
                       text=True)
    if p.returncode not in (0, 3):
        fail("%s: qemu-img check exited %d:\n%s%s" % (
            name, p.returncode, p.stdout, p.stderr))
    return p.returncode


def qemu_reads(name, image, durable):
    """qemu must read every acknowledged, flushed write."""
    raw = image + ".raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                    image, raw], check=True)
    with open(raw, "rb") as f:
        for off, data in durable.items():
            f.seek(off)
            if f.read(len(data)) != data:
                fail("%s: qemu does not read the flushed write at %d" %
                     (name, off))
    os.unlink(raw)


def read_back(name, h, durable, who):
    for off, data in durable.items():
        try:
            got = h.pread(len(data), off)
        except nbd.Error as e:
            fail("%s: %s: read at %d failed after the fault: %s" % (
                name, who, off, e))
        if got != data:
            fail("%s: %s: read at %d returns other data after the fault" %
                 (name, who, off))


def one_fault(binary, scratch, tag, ename, nth, seed):
    """Serve a fresh image with TAG:nth:ENAME and write until it bites."""
    name = "%s-%d-%s" % (tag, nth, ename)
    prefill = 1900 << 10 if tag == "REFTABLE_GROW" else 0
    image = make_image(scratch, name, prefill)
    spec = "%s:%d:%s" % (tag, nth, ename)
    if tag == "ALLOC":
        # A failed growth of the file by a step is retried for exactly
        # the clusters needed: fail both.
        spec += ",%s:%d:%s" % (tag, nth + 1, ename)
    s = Server(binary, scratch, name, image, spec)
    rng = random.Random("%d %s" % (seed, name))
    a = s.client()
    r = s.client()
    durable = {}        # offset -> bytes, acknowledged and flushed
    pending = {}        # acknowledged, not yet flushed
    failure = None
    # Writes of 1 to 8 clusters, each in its own 32 KiB stretch (one L2
    # table of 512-byte clusters), marching through the disk from past
    # the prefill.
    base = (prefill + (64 << 10)) // (32 << 10) * (32 << 10)
    for i in range((SIZE - base) // (32 << 10)):
        off = base + i * (32 << 10) + rng.randrange(0, 48) * CLUSTER
        n = rng.randrange(1, 9) * CLUSTER
        if tag == "ALLOC":
            # Fill whole stretches, so the file grows by a step (1 MiB)
            # every 32 writes.
            off = base + i * (32 << 10)
            n = 32 << 10
        data = data_for(rng, n)
        what = "write %d+%d" % (off, n)
        # Reads of flushed data in flight on another connection while the
        # request runs.
        reads = []
        for roff in rng.sample(sorted(durable), min(2, len(durable))):
            buf = nbd.Buffer(len(durable[roff]))
            reads.append((roff, buf, r.aio_pread(buf, roff)))
        try:
            if i % 7 == 6:
                what = "zero %d+%d" % (off, n)
                a.zero(n, off)
                data = bytes(n)
            else:
                a.pwrite(data, off)
            pending[off] = data
            if i % 4 == 3:
                what = "flush"
                a.flush()
                durable.update(pending)
                pending.clear()
        except nbd.Error as e:
            failure = (what, e)
        for roff, buf, cookie in reads:
            while not r.aio_command_completed(cookie):
                r.poll(-1)
            if buf.to_bytearray() != durable[roff]:
                fail("%s: a read at %d beside %s returned other data" % (
                    name, roff, what))
        if failure:
            break
    if failure is None:
        try:
            a.flush()
        except nbd.Error as e:
            failure = ("final flush", e)
    if failure is None:
        fail("%s: no request failed; the server log:\n%s" % (name, s.log()))
    what, err = failure
    got = errno.errorcode.get(err.errnum or 0, str(err.errnum))
    if err.errnum not in (ERRNOS[ename], errno.EIO):
        fail("%s: %s failed with %s (%s), want %s or EIO" % (
            name, what, got, err, ename))
    if "injected" not in s.log():
        fail("%s: the server log names no injected fault:\n%s" %
             (name, s.log()))
    if not s.alive():
        fail("%s: the server died" % name)

    # Others are served: a new client, and the same connection, read
    # everything that was flushed.
    b = s.client()
    read_back(name, b, durable, "a second client")
    read_back(name, a, durable, "the failed request's connection")

    # Later writes either fail cleanly or land.
    later = "refused"
    try:
        data = data_for(rng, 4 * CLUSTER)
        b.pwrite(data, 0)
        b.flush()
        if b.pread(len(data), 0) != data:
            fail("%s: a write after the fault reads back wrong" % name)
        durable[0] = data
        later = "served"
    except nbd.Error as e:
        if e.errnum not in (ERRNOS[ename], errno.EIO):
            fail("%s: a write after the fault failed with %s" % (
                name, errno.errorcode.get(e.errnum or 0)))
    for h in (a, b, r):
        h.shutdown()
    s.stop()
    rc = qemu_img_check(name, image)
    qemu_reads(name, image, durable)
    print("%s: %s got %s; %d flushed writes read back; later writes %s; "
          "qemu-img check %d" % (name, what, got, len(durable), later, rc))
    os.unlink(image)


def disk_full(binary, scratch, seed):
    """ALLOC:3+:ENOSPC on an image holding 1 MiB already: from the third
    growth of the file on, every write that needs space fails; writes
    into clusters already allocated still land, and reads go on."""
    name = "disk-full"
    prefill = 1 << 20
    image = make_image(scratch, name, prefill)
    s = Server(binary, scratch, name, image, "ALLOC:3+:ENOSPC")
    rng = random.Random("%d %s" % (seed, name))
    a = s.client()
    durable = {}
    failures = 0
    landed = 0
    for i in range((SIZE - prefill) // (128 << 10)):
        off = prefill + i * (128 << 10)
        data = data_for(rng, 64 << 10)
        try:
            a.pwrite(data, off)
            a.flush()
            durable[off] = data
            landed += 1
        except nbd.Error as e:
            if e.errnum not in (errno.ENOSPC, errno.EIO):
                fail("%s: write at %d failed with %s" % (
                    name, off, errno.errorcode.get(e.errnum or 0)))
            failures += 1
    if failures == 0:
        fail("%s: no write failed; the server log:\n%s" % (name, s.log()))
    for off in range(0, prefill, 64 << 10):
        durable[off] = b"\x33" * (64 << 10)
    b = s.client()
    read_back(name, b, durable, "a second client")
    # Overwrites need no space.
    for off in range(0, prefill, 256 << 10):
        data = data_for(rng, 64 << 10)
        try:
            b.pwrite(data, off)
            b.flush()
        except nbd.Error as e:
            fail("%s: an overwrite of allocated clusters at %d failed on a "
                 "full disk: %s" % (name, off, e))
        durable[off] = data
    read_back(name, a, durable, "the first client")
    for h in (a, b):
        h.shutdown()
    s.stop()
    rc = qemu_img_check(name, image)
    qemu_reads(name, image, durable)
    print("%s: %d writes landed before the disk filled, %d refused, "
          "overwrites landed; qemu-img check %d" % (
              name, landed, failures, rc))


def main():
    binary, scratch, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tags = ["L1", "L2", "REFCOUNT_BLOCK", "REFCOUNT_TABLE", "ALLOC",
            "REFTABLE_GROW", "FLUSH"]
    if "--with-l1-grow" in sys.argv[4:]:
        tags.append("L1_GROW")
    for tag in tags:
        for ename in ("EIO", "ENOSPC"):
            # The Nth operation of the tag: the first, and one later (the
            # refcount table grows once here: its write, then its sync).
            for nth in (1, 2 if tag == "REFTABLE_GROW" else 3):
                one_fault(binary, scratch, tag, ename, nth, seed)
    disk_full(binary, scratch, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
