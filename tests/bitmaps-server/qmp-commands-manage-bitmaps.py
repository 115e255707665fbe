#!/usr/bin/python3
"""The control socket speaks QMP and manages the export's dirty bitmaps:
QEMU's greeting, qmp_capabilities first, every bitmap command (add,
remove, clear, enable, disable, merge, transaction) with its effect seen
in query-named-block-nodes and over NBD, a transaction rolled back whole
when one action fails, QMP's errors for malformed JSON, unknown
commands and nodes, missing and mistyped arguments, a client leaving in
the middle of a command, an overlong request (that client is dropped),
several clients at once, and quit.  A bitmap added is offered to the
next connection; one removed under a connection makes its BLOCK_STATUS
fail with EINVAL.  An NBD client reads after every step: the server
keeps serving throughout."""

import os
import stat
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bmtest import *  # noqa: E402,F401,F403

SIZE = 64 * MIB
NODE = "disk"
EINVAL = 22


def start():
    img = os.path.join(scratch(), "disk.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    qemu_img("bitmap", "--add", "-g", "64K", img, "old")
    ctl = os.path.join(scratch(), "ctl.sock")
    ds = Server(img, "-f", "qcow2", "-x", NODE, "--control", ctl)
    nbd = ds.connect()
    nbd.connect_export(structured=True, name=NODE.encode())
    return img, ctl, ds, nbd


def serving():
    res = nbd.read(0, 4096)
    check(res.error == 0 and ds.alive(), "NBD read failed: %r" %
          res.messages)


def nbd_write(off, n):
    res = nbd.write(off, b"\xab" * n)
    check(res.error == 0, "write: %r" % res.messages)


def contexts_offered():
    c = ds.connect()
    c.handshake()
    c.expect_option(OPT_STRUCTURED_REPLY, REP_ACK)
    names = list_meta(c, [b"qemu:dirty-bitmap:"], NODE.encode())
    c.close()
    return names


def socket_is_private():
    st = os.stat(ctl)
    check(stat.S_ISSOCK(st.st_mode), "control path is not a socket")
    check(stat.S_IMODE(st.st_mode) == 0o600,
          "control socket mode %o" % stat.S_IMODE(st.st_mode))


def greeting_then_capabilities_first():
    q = Qmp(ctl, negotiate=False)
    g = q.greeting
    check(set(g) == {"QMP"}, "greeting %r" % g)
    ver = g["QMP"]["version"]
    check(set(ver["qemu"]) == {"major", "minor", "micro"},
          "version %r" % ver)
    check(ver["qemu"]["major"] >= 8, "version %r" % ver)
    check(isinstance(ver["package"], str), "package %r" % ver)
    check(g["QMP"]["capabilities"] == [], "capabilities %r" % g)
    r = q.cmd("query-block-exports", qmp_id="early")
    check(r.get("error", {}).get("class") == "CommandNotFound" and
          r.get("id") == "early", "command before negotiation: %r" % r)
    r = q.cmd("qmp_capabilities", qmp_id={"n": [1, 2]})
    check(r == {"return": {}, "id": {"n": [1, 2]}}, "negotiation: %r" % r)
    r = q.cmd("qmp_capabilities")
    check(r["error"]["class"] == "CommandNotFound", "again: %r" % r)
    names = {c["name"] for c in q.ok("query-commands")}
    want = {"qmp_capabilities", "transaction", "quit",
            "query-named-block-nodes", "query-block-exports",
            "query-version", "query-commands"} | {
        "block-dirty-bitmap-" + x for x in
        ("add", "remove", "clear", "enable", "disable", "merge")}
    check(names == want, "query-commands: %r" % sorted(names))
    v = q.ok("query-version")
    check(v["qemu"] == ver["qemu"] and v["package"] == ver["package"],
          "query-version %r, greeting %r" % (v, ver))
    r = q.cmd("query-block-exports", qmp_id=7)
    check(r == {"return": [{"type": "nbd", "id": NODE, "node-name": NODE,
                            "shutting-down": False}], "id": 7},
          "query-block-exports: %r" % r)
    q.close()
    serving()


def add_shows_in_query_and_nbd():
    q = Qmp(ctl)
    q.ok("block-dirty-bitmap-add", node=NODE, name="a", granularity=65536,
         persistent=True)
    q.ok("block-dirty-bitmap-add", node=NODE, name="b", disabled=True)
    cls, desc = q.error("block-dirty-bitmap-add", node=NODE, name="a")
    check(cls == "GenericError", "duplicate add: %r" % cls)
    nodes = q.ok("query-named-block-nodes")
    n = [x for x in nodes if x["node-name"] == NODE]
    check(len(n) == 1, "nodes %r" % nodes)
    n = n[0]
    check(n["drv"] == "qcow2" and n["image"]["virtual-size"] == SIZE and
          n["ro"] is False, "node %r" % n)
    bm = {b["name"]: b for b in n["dirty-bitmaps"]}
    check(set(bm) == {"old", "a", "b"}, "bitmaps %r" % sorted(bm))
    a = bm["a"]
    check(a["granularity"] == 65536 and a["recording"] is True and
          a["persistent"] is True and a["count"] == 0 and
          a["busy"] is False and a["inconsistent"] is False, "a: %r" % a)
    check(bm["b"]["recording"] is False and bm["b"]["persistent"] is False,
          "b: %r" % bm["b"])
    offered = contexts_offered()
    check(offered == ["qemu:dirty-bitmap:a", "qemu:dirty-bitmap:b",
                      "qemu:dirty-bitmap:old"],
          "offered after add: %r" % offered)
    q.close()
    serving()


def enable_disable_clear_take_effect():
    q = Qmp(ctl)
    nbd_write(1 * MIB, 4096)
    bm = bitmaps_of(q, NODE)
    check(bm["a"]["count"] == 65536, "a after a write: %r" % bm["a"])
    check(bm["b"]["count"] == 0, "disabled b recorded: %r" % bm["b"])
    q.ok("block-dirty-bitmap-enable", node=NODE, name="b")
    q.ok("block-dirty-bitmap-disable", node=NODE, name="a")
    nbd_write(3 * MIB, 4096)
    bm = bitmaps_of(q, NODE)
    check(bm["a"]["count"] == 65536 and bm["a"]["recording"] is False,
          "disabled a: %r" % bm["a"])
    check(bm["b"]["count"] > 0 and bm["b"]["recording"] is True,
          "enabled b: %r" % bm["b"])
    # The new connection sees a's dirty 64 KiB at 1 MiB.
    c = ds.connect()
    c.connect_export(structured=True, meta=["qemu:dirty-bitmap:a"],
                     name=NODE.encode())
    res = block_status(c, 0, SIZE)
    got = [(s, n) for s, n, f in runs(res.extents[c.contexts[
        "qemu:dirty-bitmap:a"]]) if f & 1]
    check(got == [(1 * MIB, 65536)], "a over NBD: %r" % got)
    c.close()
    q.ok("block-dirty-bitmap-enable", node=NODE, name="a")
    q.ok("block-dirty-bitmap-clear", node=NODE, name="a")
    check(bitmaps_of(q, NODE)["a"]["count"] == 0, "clear left bits")
    q.close()
    serving()


def merge_takes_names_and_objects():
    q = Qmp(ctl)
    nbd_write(5 * MIB, 512)
    q.ok("block-dirty-bitmap-add", node=NODE, name="m", disabled=True)
    q.ok("block-dirty-bitmap-merge", node=NODE, target="m",
         bitmaps=["a", {"node": NODE, "name": "b"}])
    bm = bitmaps_of(q, NODE)
    check(bm["m"]["count"] >= bm["b"]["count"] and bm["m"]["count"] > 0,
          "merge: %r" % bm)
    cls, desc = q.error("block-dirty-bitmap-merge", node=NODE, target="m",
                        bitmaps=[{"node": "other", "name": "a"}])
    check(cls == "GenericError", "cross-node merge: %r" % cls)
    cls, desc = q.error("block-dirty-bitmap-merge", node=NODE, target="m",
                        bitmaps=["nope"])
    check(cls == "GenericError", "merge of a missing bitmap: %r" % cls)
    q.ok("block-dirty-bitmap-remove", node=NODE, name="m")
    check("m" not in bitmaps_of(q, NODE), "m not removed")
    q.close()
    serving()


def transaction_applies_all_or_nothing():
    q = Qmp(ctl)
    nbd_write(7 * MIB, 512)
    before = bitmaps_of(q, NODE)
    check(before["a"]["count"] > 0, "a is clean: %r" % before["a"])
    q.ok("transaction", actions=[
        {"type": "block-dirty-bitmap-add",
         "data": {"node": NODE, "name": "t1", "persistent": True}},
        {"type": "block-dirty-bitmap-disable",
         "data": {"node": NODE, "name": "b"}}])
    bm = bitmaps_of(q, NODE)
    check("t1" in bm and bm["b"]["recording"] is False, "%r" % bm)
    for actions in (
            [{"type": "block-dirty-bitmap-add",
              "data": {"node": NODE, "name": "t2"}},
             {"type": "block-dirty-bitmap-clear",
              "data": {"node": NODE, "name": "a"}},
             {"type": "block-dirty-bitmap-remove",
              "data": {"node": NODE, "name": "nope"}}],
            [{"type": "block-dirty-bitmap-add",
              "data": {"node": NODE, "name": "t2"}},
             {"type": "block-dirty-bitmap-add",
              "data": {"node": NODE, "name": "t2"}}],
            [{"type": "block-dirty-bitmap-clear",
              "data": {"node": NODE, "name": "a"}},
             {"type": "block-dirty-bitmap-enable",
              "data": {"node": "other", "name": "b"}}],
            [{"type": "block-dirty-bitmap-clear",
              "data": {"node": NODE, "name": "a"}},
             {"type": "blockdev-backup", "data": {}}],
            [{"type": "block-dirty-bitmap-clear",
              "data": {"node": NODE}}]):
        cls, desc = q.error("transaction", actions=actions)
        check(cls == "GenericError", "failed transaction: %r" % cls)
        bm = bitmaps_of(q, NODE)
        check("t2" not in bm, "rolled back transaction left t2")
        check(bm["a"]["count"] == before["a"]["count"],
              "rolled back transaction cleared a: %r" % bm["a"])
    q.ok("block-dirty-bitmap-enable", node=NODE, name="b")
    q.close()
    serving()


def removed_bitmap_fails_block_status_with_einval():
    q = Qmp(ctl)
    q.ok("block-dirty-bitmap-add", node=NODE, name="doomed")
    c = ds.connect()
    c.connect_export(structured=True, name=NODE.encode(),
                     meta=["base:allocation", "qemu:dirty-bitmap:doomed"])
    res = block_status(c, 0, SIZE)
    check(res.error == 0, "before removal: %r" % res.messages)
    q.ok("block-dirty-bitmap-remove", node=NODE, name="doomed")
    res = block_status(c, 0, SIZE)
    check(res.error == EINVAL, "after removal: error %d %r" %
          (res.error, res.messages))
    check(c.read(0, 512).error == 0, "connection unusable after the error")
    c.close()
    check("qemu:dirty-bitmap:doomed" not in contexts_offered(),
          "removed bitmap still offered")
    q.close()
    serving()


def block_status_during_bitmap_changes():
    """Block status of a bitmap while transactions change others: every
    answer is whole and the same (it runs on the loop thread only while
    no change is in flight, on a worker otherwise)."""
    import threading
    c = ds.connect()
    c.connect_export(structured=True, name=NODE.encode(),
                     meta=["qemu:dirty-bitmap:a"])
    cid = c.contexts["qemu:dirty-bitmap:a"]
    want = runs(block_status(c, 0, SIZE).extents[cid])
    errors = []

    def churn():
        try:
            q = Qmp(ctl)
            for i in range(40):
                q.ok("transaction", actions=[
                    {"type": "block-dirty-bitmap-add",
                     "data": {"node": NODE, "name": "churn"}},
                    {"type": "block-dirty-bitmap-merge",
                     "data": {"node": NODE, "target": "churn",
                              "bitmaps": ["a"]}}])
                q.ok("block-dirty-bitmap-remove", node=NODE, name="churn")
            q.close()
        except Exception as e:      # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=churn)
    t.start()
    n = 0
    while t.is_alive() or n < 10:
        res = block_status(c, 0, SIZE)
        check(res.error == 0, "BLOCK_STATUS during changes: %r" %
              res.messages)
        check(runs(res.extents[cid]) == want, "a changed under churn")
        n += 1
    t.join()
    check(not errors, "churn: %r" % errors)
    c.close()
    serving()


def bad_requests_get_qmp_errors():
    q = Qmp(ctl)
    cases = [
        (b'{"execute": "query-version"]\n', "GenericError"),
        (b'{"execute" "x"}\n', "GenericError"),
        (b'[1, 2]\n', "GenericError"),
        (b'"execute"\n', "GenericError"),
        (b'{"arguments": {}}\n', "GenericError"),
        (b'{"execute": 5}\n', "GenericError"),
        (b'{"execute": "quit", "arguments": []}\n', "GenericError"),
        (b'{"execute": "quit", "bogus": 1}\n', "GenericError"),
        (b'{"execute": "no-such-command"}\n', "CommandNotFound"),
    ]
    for raw, cls in cases:
        q.send_raw(raw)
        r = q.recv()
        check(r.get("error", {}).get("class") == cls,
              "%r: %r" % (raw, r))
        check(q.cmd("query-version").get("return"),
              "connection unusable after %r" % raw)
    arg_cases = [
        ("block-dirty-bitmap-add", {"node": "nope", "name": "x"}),
        ("block-dirty-bitmap-add", {"node": NODE}),
        ("block-dirty-bitmap-add", {"name": "x"}),
        ("block-dirty-bitmap-add", {"node": NODE, "name": ""}),
        ("block-dirty-bitmap-add", {"node": NODE, "name": 5}),
        ("block-dirty-bitmap-add", {"node": NODE + "\0x", "name": "x"}),
        ("block-dirty-bitmap-remove", {"node": NODE, "name": "a\0b"}),
        ("block-dirty-bitmap-add", {"node": NODE, "name": "x",
                                    "granularity": 1000}),
        ("block-dirty-bitmap-add", {"node": NODE, "name": "x",
                                    "granularity": 256}),
        ("block-dirty-bitmap-add", {"node": NODE, "name": "x",
                                    "granularity": "64k"}),
        ("block-dirty-bitmap-add", {"node": NODE, "name": "x",
                                    "frobnicate": True}),
        ("block-dirty-bitmap-remove", {"node": NODE, "name": "nope"}),
        ("block-dirty-bitmap-clear", {"node": "nope", "name": "a"}),
        ("block-dirty-bitmap-enable", {"node": NODE}),
        ("block-dirty-bitmap-disable", {"node": NODE, "name": "nope"}),
        ("block-dirty-bitmap-merge", {"node": NODE, "target": "a"}),
        ("block-dirty-bitmap-merge", {"node": NODE, "target": "a",
                                      "bitmaps": "b"}),
        ("block-dirty-bitmap-merge", {"node": NODE, "target": "a",
                                      "bitmaps": [5]}),
        ("transaction", {}),
        ("transaction", {"actions": [5]}),
        ("transaction", {"actions": [{"type": "block-dirty-bitmap-add"}]}),
        ("query-block-exports", {"x": 1}),
    ]
    for command, args in arg_cases:
        r = q.cmd(command, **{k.replace("-", "_"): v
                              for k, v in args.items()})
        check(r.get("error", {}).get("class") == "GenericError",
              "%s %r: %r" % (command, args, r))
    check(set(bitmaps_of(q, NODE)) == {"old", "a", "b", "t1"},
          "failed commands changed the bitmaps: %r" %
          sorted(bitmaps_of(q, NODE)))
    q.close()
    serving()


def clients_leaving_mid_command_are_harmless():
    for i in range(20):
        q = Qmp(ctl)
        q.send_raw(json.dumps({"execute": "transaction", "arguments": {
            "actions": [{"type": "block-dirty-bitmap-add",
                         "data": {"node": NODE, "name": "gone%d" % i}},
                        {"type": "block-dirty-bitmap-clear",
                         "data": {"node": NODE, "name": "gone%d" % i}}]}
        }).encode() + b"\n" + b'{"execute": "query-named-block-nodes"}\n')
        q.close()
    q = Qmp(ctl)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [n for n in bitmaps_of(q, NODE) if n.startswith("gone")]
        if len(left) == 20:
            break
        time.sleep(0.05)
    check(len(left) == 20, "commands of departed clients: %r" % left)
    q.ok("transaction", actions=[
        {"type": "block-dirty-bitmap-remove",
         "data": {"node": NODE, "name": n}} for n in left])
    q.close()
    serving()


def half_closed_client_gets_every_answer():
    """As `echo ... | socat - UNIX-CONNECT:...` sends: everything, then
    end of input; every answer still comes back."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(ctl)
    s.sendall(b'{"execute": "qmp_capabilities"}\n'
              b'{"execute": "block-dirty-bitmap-add", "arguments": '
              b'{"node": "disk", "name": "h"}, "id": 1}\n'
              b'{"execute": "block-dirty-bitmap-remove", "arguments": '
              b'{"node": "disk", "name": "h"}, "id": 2}')
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    lines = [json.loads(x) for x in data.splitlines()]
    check(len(lines) == 4 and lines[1] == {"return": {}} and
          lines[2] == {"return": {}, "id": 1} and
          lines[3] == {"return": {}, "id": 2}, "answers %r" % lines)
    serving()


def overlong_request_drops_only_that_client():
    other = Qmp(ctl)
    q = Qmp(ctl)
    try:
        q.send_raw(b'{"execute": "query-version", "id": "' +
                   b"x" * (2 * MIB))
        closed = False
        q.recv()
    except (Closed, ConnectionResetError, BrokenPipeError):
        closed = True
    check(closed, "an overlong request was answered")
    q.close()
    check(other.cmd("query-version").get("return"),
          "other client lost with the overlong one")
    other.close()
    serving()


def several_clients_interleave():
    qs = [Qmp(ctl) for _ in range(4)]
    for i, q in enumerate(qs):
        q.send_raw(json.dumps({"execute": "block-dirty-bitmap-add",
                               "arguments": {"node": NODE,
                                             "name": "c%d" % i},
                               "id": i}).encode() + b"\n")
    for i, q in enumerate(qs):
        r = q.recv()
        check(r == {"return": {}, "id": i}, "client %d: %r" % (i, r))
    for i, q in enumerate(qs):
        q.ok("block-dirty-bitmap-remove", node=NODE, name="c%d" % i)
        q.close()
    serving()


def quit_stops_the_server():
    q = Qmp(ctl)
    r = q.cmd("quit")
    check(r == {"return": {}}, "quit: %r" % r)
    try:
        ds.proc.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError("server still running 10 s after quit")
    check(ds.proc.returncode == 0, "exit status %d" % ds.proc.returncode)
    ds.stopped = True
    check(not os.path.exists(ctl), "control socket left behind")
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", img], check=True,
        stdout=subprocess.PIPE).stdout)
    names = sorted(b["name"] for b in
                   info["format-specific"]["data"].get("bitmaps", []))
    check(names == ["a", "old", "t1"],
          "persistent bitmaps after quit: %r" % names)
    subprocess.run(["qemu-img", "check", "-q", img], check=True)


img, ctl, ds, nbd = start()
run(socket_is_private, greeting_then_capabilities_first,
    add_shows_in_query_and_nbd, enable_disable_clear_take_effect,
    merge_takes_names_and_objects, transaction_applies_all_or_nothing,
    removed_bitmap_fails_block_status_with_einval,
    block_status_during_bitmap_changes,
    bad_requests_get_qmp_errors, clients_leaving_mid_command_are_harmless,
    half_closed_client_gets_every_answer,
    overlong_request_drops_only_that_client, several_clients_interleave,
    quit_stops_the_server)
