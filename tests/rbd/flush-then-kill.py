#!/usr/bin/python3
"""Writes in flushed rounds, then a SIGKILL of the server mid-round.

  flush-then-kill.py run URI PID RECORD --seed N [--rounds R] [--slot B]
  flush-then-kill.py verify RAW RECORD

run: the export is cut into slots of B bytes (16 KiB), taken in a
seeded random order.  Each round writes a fresh batch of slots (some
pairs of neighbours as one request), 16 requests in flight, then sends a
FLUSH; once the FLUSH is answered, RECORD lists every slot of that round
and all before it as durable.  In round R (1-based, seeded among the
first ROUNDS), half of the round's writes are sent and then the server
PID is killed with SIGKILL while they are in flight.  A slot's bytes are
a function of the seed and the slot, so a slot read back with another
slot's bytes, or a torn one, cannot match.

verify: RAW (the image read back, e.g. by qemu-img convert) holds every
durable slot's bytes exactly, and zeros in every slot no request ever
wrote (slots of the killed round may hold anything).
"""

import json
import os
import random
import signal
import sys

import nbd

SLOT = 16 << 10


def slot_bytes(seed, slot, size):
    return random.Random(seed * 1000003 + slot).randbytes(size)


def wait_all(h, pending):
    while pending:
        h.poll(-1)
        for cookie in list(pending):
            if h.aio_command_completed(cookie):
                pending.remove(cookie)


def run(uri, pid, record, seed, rounds, slot_size):
    rng = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    slots = list(range(h.get_size() // slot_size))
    rng.shuffle(slots)
    per_round = max(4, len(slots) // (rounds + 2))
    kill_round = rng.randrange(2, rounds + 1)
    durable, written = [], []
    for rnd in range(1, kill_round + 1):
        batch = slots[:per_round]
        del slots[:per_round]
        reqs = []
        for s in sorted(batch):
            # A slot whose right-hand neighbour is in the batch too goes
            # out with it as one request now and then.
            if reqs and reqs[-1][0] + reqs[-1][1] == s and \
                    reqs[-1][1] < 2 and rng.random() < 0.3:
                reqs[-1] = (reqs[-1][0], 2)
            else:
                reqs.append((s, 1))
        rng.shuffle(reqs)
        written.extend(batch)
        pending = []
        for i, (first, n) in enumerate(reqs):
            if rnd == kill_round and i == len(reqs) // 2:
                os.kill(pid, signal.SIGKILL)
                print("round %d: killed the server with %d of %d writes "
                      "sent" % (rnd, i, len(reqs)))
                break
            buf = b"".join(slot_bytes(seed, s, slot_size)
                           for s in range(first, first + n))
            pending.append(h.aio_pwrite(buf, first * slot_size))
            while len(pending) >= 16:
                h.poll(-1)
                pending = [c for c in pending
                           if not h.aio_command_completed(c)]
        else:
            wait_all(h, pending)
            h.flush()
            durable.extend(batch)
            with open(record + ".tmp", "w") as f:
                json.dump({"seed": seed, "slot": slot_size,
                           "durable": durable, "written": written}, f)
            os.rename(record + ".tmp", record)
            print("round %d: %d slots written and flushed" % (rnd,
                                                               len(batch)))
            continue
        break
    # The record also names the killed round's slots as written.
    with open(record) as f:
        rec = json.load(f)
    rec["written"] = written
    with open(record, "w") as f:
        json.dump(rec, f)


def verify(raw, record):
    with open(record) as f:
        rec = json.load(f)
    seed, slot_size = rec["seed"], rec["slot"]
    durable, written = set(rec["durable"]), set(rec["written"])
    bad = 0
    with open(raw, "rb") as f:
        data = f.read()
    zero = bytes(slot_size)
    for s in range(len(data) // slot_size):
        got = data[s * slot_size:(s + 1) * slot_size]
        if s in durable:
            want = slot_bytes(seed, s, slot_size)
        elif s not in written:
            want = zero
        else:
            continue
        if got != want:
            bad += 1
            if bad <= 5:
                print("slot %d (offset %d, %s) reads other bytes" %
                      (s, s * slot_size,
                       "flushed" if s in durable else "never written"))
    print("%d flushed slots, %d written after the last flush, %d bad" %
          (len(durable), len(written - durable), bad))
    return 1 if bad else 0


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "run":
        args = sys.argv[2:]
        opts = {"--seed": 1, "--rounds": 5, "--slot": SLOT}
        pos = []
        while args:
            a = args.pop(0)
            if a in opts:
                opts[a] = int(args.pop(0))
            else:
                pos.append(a)
        uri, pid, record = pos
        run(uri, int(pid), record, opts["--seed"], opts["--rounds"],
            opts["--slot"])
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "verify":
        return verify(sys.argv[2], sys.argv[3])
    print(__doc__.strip().split("\n\n")[0], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
