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
  flush: the client is told;
- the server is still running, and a second client, and the first
  connection too, read back every write that was acknowledged and
  flushed before the failure;
- later writes either fail cleanly or land;
- the server stops with status 0, qemu-img check exits 0 or 3 (leaks
  are allowed, corruption is not), and qemu reads every acknowledged and
  flushed write from the image.

A last case fills the disk for good (ALLOC:N+:ENOSPC): every write that
needs space fails with ENOSPC or EIO while reads go on.

Usage: qcow2w-faults.py DISKSERVE SCRATCH SEED
"""

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
        for _ in range(200):
            if os.path.exists(self.sock):
                break
            if self.proc.poll() is not None:
                fail("%s: server exited early:\n%s" % (name, self.log()))
            time.sleep(0.05)
        self.uri = "nbd+unix:///?socket=" + self.sock

    def client(self):
        h = nbd.NBD()
        h.connect_uri(self.uri)
        return h

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
    s = Server(binary, scratch, name, image, spec)
    rng = random.Random("%d %s" % (seed, name))
    a = s.client()
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
        data = data_for(rng, n)
        what = "write %d+%d" % (off, n)
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
            break
    if failure is None:
        try:
            a.flush()
        except nbd.Error as e:
            failure = ("final flush", e)
    if failure is None:
        fail("%s: no request failed; the server log:\n%s" % (name, s.log()))
    what, e = failure
    if e.errnum not in (ERRNOS[ename], errno.EIO):
        fail("%s: %s failed with %s (%s), want %s or EIO" % (
            name, what, errno.errorcode.get(e.errnum or 0), e, ename))
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
    for h in (a, b):
        h.shutdown()
    s.stop()
    rc = qemu_img_check(name, image)
    qemu_reads(name, image, durable)
    print("%s: %s got %s; %d flushed writes read back; later writes %s; "
          "qemu-img check %d" % (name, what,
                                 errno.errorcode.get(e.errnum or 0),
                                 len(durable), later, rc))
    os.unlink(image)


def disk_full(binary, scratch, seed):
    """ALLOC:3+:ENOSPC: from the third growth of the file on, every write
    that needs space fails; reads go on, and the image stays sound."""
    name = "disk-full"
    image = make_image(scratch, name)
    s = Server(binary, scratch, name, image, "ALLOC:3+:ENOSPC")
    rng = random.Random("%d %s" % (seed, name))
    a = s.client()
    durable = {}
    failures = 0
    for i in range(SIZE // (256 << 10)):
        off = i * (256 << 10)
        data = data_for(rng, 64 << 10)
        try:
            a.pwrite(data, off)
            a.flush()
            durable[off] = data
        except nbd.Error as e:
            if e.errnum not in (errno.ENOSPC, errno.EIO):
                fail("%s: write at %d failed with %s" % (
                    name, off, errno.errorcode.get(e.errnum or 0)))
            failures += 1
    if failures == 0:
        fail("%s: no write failed; the server log:\n%s" % (name, s.log()))
    b = s.client()
    read_back(name, b, durable, "a second client")
    for h in (a, b):
        h.shutdown()
    s.stop()
    rc = qemu_img_check(name, image)
    qemu_reads(name, image, durable)
    print("%s: %d writes landed before the disk filled, %d refused; "
          "qemu-img check %d" % (name, len(durable), failures, rc))


def main():
    binary, scratch, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tags = ["L1", "L2", "REFCOUNT_BLOCK", "REFCOUNT_TABLE", "ALLOC",
            "REFTABLE_GROW", "FLUSH"]
    if "--with-l1-grow" in sys.argv[4:]:
        tags.append("L1_GROW")
    for tag in tags:
        for ename in ("EIO", "ENOSPC"):
            for nth in (1, 3):
                one_fault(binary, scratch, tag, ename, nth, seed)
    disk_full(binary, scratch, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
