#!/usr/bin/python3
"""Frees queued after an inline read drain (the driver hears when the
read is over), so a trim-heavy phase leaves space the next writes reuse
and no write turns into a metadata flush.

Usage: qcow2-free-drain.py URI IO_LOG [--concurrent-reads]

With 4 KiB clusters: writes 16 MiB at 0 and 1 MiB at 48 MiB, flushes,
reads 4 KiB of that data (served on the event loop thread from cached
metadata), trims the 16 MiB one cluster per request, flushes, then
writes 16 MiB at 32 MiB one cluster per request and flushes.  With
--concurrent-reads a second connection reads data at 48 MiB in a loop
from the first read to the end.  Prints the number of syncs the server
issued during the second write phase (from the I/O log) and exits 1
when it is more than the bound below; the caller judges the file size.
"""

import os
import struct
import sys
import threading

import nbd

CLUSTER = 4096
PHASE = 16 << 20
MAX_SYNCS = 64      # a flush or two, and L2 write-backs, not one a write

REC = struct.Struct("<IIIiQQQII")   # struct io_log_rec (formats/io.h)
SYNC_BEGIN = 3


def syncs_since(path, start):
    """SYNC_BEGIN records in the log from byte offset start on."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    n = 0
    pos = 0
    while pos + REC.size <= len(data):
        rec = REC.unpack_from(data, pos)
        if rec[0] == SYNC_BEGIN:
            n += 1
        pos += REC.size + rec[8]
    return n


def reader(uri, stop, errors):
    h = nbd.NBD()
    h.connect_uri(uri)
    n = 0
    try:
        while not stop.is_set():
            buf = h.pread(CLUSTER, (48 << 20) + (n % 256) * CLUSTER)
            if buf != bytes([0x48]) * CLUSTER:
                errors.append("concurrent read returned wrong data")
                return
            n += 1
    except nbd.Error as e:
        errors.append("concurrent read: %s" % e)
    finally:
        h.shutdown()
    print("concurrent reads: %d" % n)


def main():
    uri, log = sys.argv[1], sys.argv[2]
    concurrent = "--concurrent-reads" in sys.argv[3:]
    h = nbd.NBD()
    h.connect_uri(uri)
    chunk = 1 << 20
    for off in range(0, PHASE, chunk):
        h.pwrite(bytes([0x16]) * chunk, off)
    h.pwrite(bytes([0x48]) * chunk, 48 << 20)
    h.flush()

    if h.pread(CLUSTER, 0) != bytes([0x16]) * CLUSTER:
        sys.exit("FAIL: first read returned wrong data")
    stop = threading.Event()
    errors = []
    t = None
    if concurrent:
        t = threading.Thread(target=reader, args=(uri, stop, errors))
        t.start()
    for off in range(0, PHASE, CLUSTER):
        h.trim(CLUSTER, off)
    h.flush()
    start = os.path.getsize(log)
    data = bytes([0x32]) * CLUSTER
    for off in range(32 << 20, (32 << 20) + PHASE, CLUSTER):
        h.pwrite(data, off)
    h.flush()
    syncs = syncs_since(log, start)
    stop.set()
    if t:
        t.join()
    if h.pread(CLUSTER, 32 << 20) != data:
        sys.exit("FAIL: written data reads back wrong")
    h.shutdown()
    print("syncs during the second write phase: %d" % syncs)
    if errors:
        sys.exit("FAIL: " + errors[0])
    if syncs > MAX_SYNCS:
        sys.exit("FAIL: %d syncs for %d writes: the trimmed clusters' "
                 "frees did not drain (at most %d expected)"
                 % (syncs, PHASE // CLUSTER, MAX_SYNCS))


main()
