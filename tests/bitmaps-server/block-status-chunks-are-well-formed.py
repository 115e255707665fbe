#!/usr/bin/python3
"""BLOCK_STATUS over several contexts, as ovirt-imageio asks for it
(base:allocation, qemu:allocation-depth and a dirty bitmap together) and
as virtnbdbackup asks (the bitmap alone, up to 4 GiB at a time): one
chunk per selected context, no zero-length descriptor, every length a
multiple of 512 (and of the minimum block size) except where the image
ends, REQ_ONE answered with exactly one descriptor, compact and extended
headers alike.  A compact 4 GiB request is answered with a prefix whose
lengths fit 32 bits and end on a block boundary.  The dirty runs equal
qemu-nbd's for the same image (qemu-img-made bitmaps, qemu-io writes)."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bmtest import *  # noqa: E402,F401,F403

SIZE = 6 * GIB + 3 * 512    # past 4 GiB, and not a multiple of 64 KiB
CTX = ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b"]
WRITES = [(0, 1000), (3 * MIB, 65536), (7 * MIB + 512, 1536),
          (100 * MIB, 4 * MIB), (4 * GIB - 4096, 8192),
          (4 * GIB + 5 * MIB, 1), (5 * GIB, 70000), (SIZE - 512, 512)]


def make_image():
    img = os.path.join(scratch(), "big.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 64k 1m",
                    img], check=True, stdout=subprocess.DEVNULL)
    qemu_img("bitmap", "--add", "-g", "64K", img, "b")
    qemu_img("bitmap", "--add", "-g", "512", img, "f")
    cmds = []
    for off, n in WRITES:
        cmds += ["-c", "write -P 9 %d %d" % (off, n)]
    subprocess.run(["qemu-io", "-f", "qcow2"] + cmds + [img], check=True,
                   stdout=subprocess.DEVNULL)
    return img


def check_lengths(res, what, size, align):
    for cid, ext in res.extents.items():
        pos = res.offset
        for n, _ in ext:
            check(n > 0, "%s: zero-length extent" % what)
            end = pos + n
            check(end <= size, "%s: extent past the image end" % what)
            check(n % align == 0 or end == size,
                  "%s: context %d: length %d at %d is not a multiple of %d"
                  % (what, cid, n, pos, align))
            pos = end


def whole_runs(conn, cid, size, step, flags=0):
    """Merged runs of context cid over the whole image, by requests of
    step bytes (each continuing where the last answer ended)."""
    out = []
    off = 0
    while off < size:
        res = block_status(conn, off, min(step, size - off), flags)
        check(res.error == 0, "BLOCK_STATUS at %d: %r" % (off, res.messages))
        got = res.extents[cid]
        total = sum(n for n, _ in got)
        check(total > 0, "no progress at %d" % off)
        for r in runs(got, off):
            if out and out[-1][2] == r[2] and out[-1][0] + out[-1][1] == r[0]:
                out[-1] = (out[-1][0], out[-1][1] + r[1], r[2])
            else:
                out.append(r)
        off += total
    if out and out[-1][0] + out[-1][1] > size:
        out[-1] = (out[-1][0], size - out[-1][0], out[-1][2])
    return out


def dirty(rs):
    return [(s, n) for s, n, f in rs if f & 1]


def oracle_runs(name):
    c = qn.connect()
    c.connect_export(structured=True, meta=["qemu:dirty-bitmap:" + name])
    rs = whole_runs(c, c.contexts["qemu:dirty-bitmap:" + name], SIZE,
                    1 << 30)
    c.close()
    return rs


def three_contexts_three_chunks():
    for extended in (False, True):
        c = ds.connect()
        c.connect_export(structured=True, extended=extended, meta=CTX)
        check(sorted(c.contexts) == sorted(CTX), "SET: %r" % c.contexts)
        for off, n in [(0, 64 * MIB), (3 * MIB, 4 * MIB + 512),
                       (4 * GIB - 64 * MIB, 128 * MIB),
                       (SIZE - 10 * MIB, 10 * MIB)]:
            res = block_status(c, off, n)
            what = "%s [%d, +%d)" % ("extended" if extended else "compact",
                                     off, n)
            check(res.error == 0, "%s: %r" % (what, res.messages))
            check(len(res.extents) == 3, "%s: %d chunks" %
                  (what, len(res.extents)))
            check_lengths(res, what, SIZE, 512)
            for cid, ext in res.extents.items():
                check(sum(x for x, _ in ext) <= n,
                      "%s: context %d answers past the request" %
                      (what, cid))
        c.close()


def req_one_gives_one_descriptor():
    for extended in (False, True):
        c = ds.connect()
        c.connect_export(structured=True, extended=extended, meta=CTX)
        for off, n in [(0, 1 * GIB), (3 * MIB + 65536, 100 * MIB),
                       (SIZE - 512, 512)]:
            res = block_status(c, off, n, CMD_FLAG_REQ_ONE)
            check(res.error == 0, "REQ_ONE: %r" % res.messages)
            for cid, ext in res.extents.items():
                check(len(ext) == 1, "REQ_ONE: context %d: %d descriptors"
                      % (cid, len(ext)))
                check(ext[0][0] <= n, "REQ_ONE: longer than the request")
            check_lengths(res, "REQ_ONE", SIZE, 512)
        c.close()


def dirty_runs_equal_qemu_nbd():
    for name in ("b", "f"):
        want = dirty(oracle_runs(name))
        check(want, "qemu-nbd reports nothing dirty in %s" % name)
        for extended in (False, True):
            for step in (0xFFFFFFFF, 64 * MIB, 7 * MIB + 512):
                if extended and step == 0xFFFFFFFF:
                    step = SIZE     # the whole image in one request
                c = ds.connect()
                c.connect_export(structured=True, extended=extended,
                                 meta=["qemu:dirty-bitmap:" + name])
                got = dirty(whole_runs(
                    c, c.contexts["qemu:dirty-bitmap:" + name], SIZE, step))
                check(got == want, "%s (%s, step %d): %r, qemu-nbd %r" %
                      (name, "extended" if extended else "compact", step,
                       got[:8], want[:8]))
                c.close()


def compact_4g_request_gets_aligned_prefix():
    """virtnbdbackup's request: the bitmap alone, 4 GiB - 1 bytes."""
    c = ds.connect()
    c.connect_export(structured=True, meta=["qemu:dirty-bitmap:b"])
    cid = c.contexts["qemu:dirty-bitmap:b"]
    res = block_status(c, 0, 0xFFFFFFFF)
    check(res.error == 0, "4 GiB request: %r" % res.messages)
    ext = res.extents[cid]
    total = sum(n for n, _ in ext)
    check(total <= 0xFFFFFFFF and total % 512 == 0,
          "4 GiB request answered %d bytes" % total)
    check(total >= 4 * GIB - 64 * 1024,
          "4 GiB request answered only %d bytes" % total)
    check_lengths(res, "4 GiB compact", SIZE, 512)
    # From an unaligned offset the first descriptor is the exception.
    res = block_status(c, 100, 0xFFFFFFFF - 100)
    check(res.error == 0, "unaligned 4 GiB request: %r" % res.messages)
    pos = res.offset
    first = res.extents[cid][0][0]
    check((pos + first) % 512 == 0 or pos + first == SIZE,
          "first descriptor ends at %d" % (pos + first))
    c.close()


def answers_are_ok_for_the_whole_image_extended():
    c = ds.connect()
    c.connect_export(structured=True, extended=True, meta=CTX)
    res = block_status(c, 0, SIZE)
    check(res.error == 0, "whole image: %r" % res.messages)
    check_lengths(res, "whole image", SIZE, 512)
    c.close()


img = make_image()
ds = Server(img, "-r", "-f", "qcow2", name="ds")
qn = QemuNbd(img, "-r", "-f", "qcow2", "-A", "-B", "b", "-B", "f")
run(three_contexts_three_chunks, req_one_gives_one_descriptor,
    dirty_runs_equal_qemu_nbd, compact_4g_request_gets_aligned_prefix,
    answers_are_ok_for_the_whole_image_extended)
