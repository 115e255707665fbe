#!/usr/bin/python3
"""LIST_META_CONTEXT and SET_META_CONTEXT are answered as qemu-nbd answers
them, for an image with three bitmaps served by both (qemu-nbd with -A
and -B for each): no queries, the "qemu:", "qemu:dirty-bitmap:" and
"base:" wildcards (every context under them on LIST, nothing on SET),
exact names, unknown names and namespaces, repeats, and an unknown
export.  Context ids differ by design; names and what is selected must
not."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bmtest import *  # noqa: E402,F401,F403

QUERIES = [
    [],
    [b"qemu:"],
    [b"qemu:dirty-bitmap:"],
    [b"base:"],
    [b"base:allocation"],
    [b"qemu:allocation-depth"],
    [b"qemu:dirty-bitmap:mid"],
    [b"qemu:dirty-bitmap:fine", b"qemu:dirty-bitmap:coarse"],
    [b"qemu:dirty-bitmap:fine", b"qemu:dirty-bitmap:fine"],
    [b"qemu:dirty-bitmap:nope"],
    [b"qemu:dirty-bitmap:mi"],
    [b"qemu:dirty-bitmap:mid2"],
    [b"qemu:nope"],
    [b"qemu"],
    [b"nope:thing"],
    [b"base:allocation", b"qemu:allocation-depth",
     b"qemu:dirty-bitmap:mid"],
    [b"qemu:", b"qemu:dirty-bitmap:coarse"],
]


def start():
    img = make_bitmap_image()
    ds = Server(img, "-r", "-f", "qcow2", name="ds")
    qn = QemuNbd(img, "-r", "-f", "qcow2", "-A", "-B", "fine", "-B", "mid",
                 "-B", "coarse")
    return ds, qn


def structured(srv):
    c = srv.connect()
    c.handshake()
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    c.structured = True
    return c


def list_answers_agree():
    cd, cq = structured(ds), structured(qn)
    for q in QUERIES:
        a, b = list_meta(cd, q), list_meta(cq, q)
        check(a == b, "LIST %r: diskserve %r, qemu-nbd %r" % (q, a, b))
    full = list_meta(cd, [])
    check("qemu:dirty-bitmap:coarse" in full,
          "LIST lists no bitmap: %r" % (full,))
    # An unknown export is an error from both.
    a = list_meta(cd, [b"qemu:"], name=b"nope")
    b = list_meta(cq, [b"qemu:"], name=b"nope")
    check(a[0] == "error" and b[0] == "error",
          "LIST on an unknown export: %r / %r" % (a, b))
    cd.close()
    cq.close()


def set_answers_agree():
    cd, cq = structured(ds), structured(qn)
    for q in QUERIES:
        a, b = set_meta(cd, q), set_meta(cq, q)
        if isinstance(a, dict) and isinstance(b, dict):
            check(sorted(a) == sorted(b),
                  "SET %r: diskserve %r, qemu-nbd %r" % (q, a, b))
            check(len(set(a.values())) == len(a),
                  "SET %r: context ids repeat: %r" % (q, a))
        else:
            check(a == b, "SET %r: diskserve %r, qemu-nbd %r" % (q, a, b))
    cd.close()
    cq.close()


def selected_bitmaps_answer_block_status():
    """What SET selected is what BLOCK_STATUS answers, one chunk each."""
    c = ds.connect()
    c.connect_export(structured=True,
                     meta=["qemu:dirty-bitmap:coarse", "base:allocation",
                           "qemu:dirty-bitmap:fine"])
    check(len(c.contexts) == 3, "contexts %r" % c.contexts)
    res = block_status(c, 0, 64 * MIB)
    check(res.error == 0, "BLOCK_STATUS failed: %r" % res.messages)
    check(sorted(res.extents) == sorted(c.contexts.values()),
          "chunks for %r, selected %r" % (sorted(res.extents), c.contexts))
    c.close()


def pipelined_options_are_answered_in_order():
    """The bitmap list is fetched off the loop: options sent together are
    still answered one after another, and clients leaving with a
    question open do no harm."""
    c = structured(ds)
    c.send_option(OPT_LIST_META_CONTEXT, meta_data(b"", [b"qemu:"]))
    c.send_option(OPT_SET_META_CONTEXT,
                  meta_data(b"", [b"qemu:dirty-bitmap:mid"]))
    c.send_option(OPT_LIST_META_CONTEXT,
                  meta_data(b"", [b"base:allocation"]))
    c.send_option(OPT_GO, go_data(b"", ()))
    for option, want in ((OPT_LIST_META_CONTEXT, 4),
                         (OPT_SET_META_CONTEXT, 1),
                         (OPT_LIST_META_CONTEXT, 1), (OPT_GO, None)):
        n = 0
        while True:
            r = c.option_reply(option)
            if r.type == REP_ACK:
                break
            check(not r.type & REP_FLAG_ERROR, "option %d: %r" %
                  (option, r))
            n += 1
        check(want is None or n == want,
              "option %d: %d contexts, expected %r" % (option, n, want))
    c.close()
    for _ in range(30):
        c = structured(ds)
        c.send_option(OPT_SET_META_CONTEXT,
                      meta_data(b"", [b"qemu:dirty-bitmap:fine"] * 50))
        c.close()
    check(ds.alive(), "server died")
    c = structured(ds)
    check(list_meta(c, [b"qemu:dirty-bitmap:"]) ==
          ["qemu:dirty-bitmap:coarse", "qemu:dirty-bitmap:fine",
           "qemu:dirty-bitmap:mid"], "server no longer answers")
    c.close()


ds, qn = start()
run(list_answers_agree, set_answers_agree,
    selected_bitmaps_answer_block_status,
    pipelined_options_are_answered_in_order)
