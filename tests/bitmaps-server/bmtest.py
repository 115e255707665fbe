"""Shared pieces of the dirty bitmap tests: images made by qemu-img (see
bitmap-functions.sh), qemu-nbd as the oracle, and a QMP client for the
control socket.  The NBD wire client is tests/protocol/nbdraw.py."""

import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "protocol"))
from nbdraw import *  # noqa: E402,F401,F403
import nbdraw  # noqa: E402


def make_bitmap_image(name="disk.qcow2"):
    """The image of bitmap-functions.sh's make_bitmap_image: bitmaps fine
    (512 B), mid (64 KiB), coarse (1 MiB, disabled).  Returns its path."""
    path = os.path.join(scratch(), name)
    subprocess.run(["bash", "-c", '. "$0"; make_bitmap_image "$1"',
                    os.path.join(HERE, "bitmap-functions.sh"), path],
                   check=True)
    return path


def qemu_img(*args):
    subprocess.run(["qemu-img"] + list(args), check=True,
                   stdout=subprocess.DEVNULL)


class QemuNbd:
    """qemu-nbd on a Unix socket in the scratch directory."""

    def __init__(self, image, *args, name="qn"):
        self.sock_path = os.path.join(scratch(), name + ".sock")
        self.proc = subprocess.Popen(
            ["qemu-nbd", "--socket=" + self.sock_path, "--persistent",
             "--shared=16"] + list(args) + [image],
            stdin=subprocess.DEVNULL)
        nbdraw._servers.append(self)
        deadline = time.monotonic() + 10
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.sock_path)
                s.close()
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if self.proc.poll() is not None or \
                   time.monotonic() > deadline:
                    raise AssertionError("qemu-nbd did not start")
                time.sleep(0.05)
        self.name = name
        self.stopped = False

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock_path)
        return Conn(s)

    def alive(self):
        return self.proc.poll() is None

    def log_text(self):
        return ""

    def stop(self):
        self.stopped = True
        self.kill()
        return 0

    def kill(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def list_meta(conn, queries, name=b""):
    """LIST_META_CONTEXT: the sorted context names, or the error reply."""
    final, earlier = conn.option(OPT_LIST_META_CONTEXT,
                                 meta_data(name, queries))
    if final.type != REP_ACK:
        return ("error", final.type)
    names = []
    for r in earlier:
        check(r.type == REP_META_CONTEXT, "unexpected reply %r" % r)
        names.append(r.data[4:].decode())
    return sorted(names)


def set_meta(conn, queries, name=b""):
    """SET_META_CONTEXT: {name: id} selected, or the error reply."""
    final, earlier = conn.option(OPT_SET_META_CONTEXT,
                                 meta_data(name, queries))
    if final.type != REP_ACK:
        return ("error", final.type)
    got = {}
    for r in earlier:
        check(r.type == REP_META_CONTEXT, "unexpected reply %r" % r)
        got[r.data[4:].decode()] = struct.unpack(">I", r.data[:4])[0]
    return got


class Qmp:
    """A QMP client: greeting read on connect; cmd() sends one command and
    returns the answer (a dict)."""

    def __init__(self, path, negotiate=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.buf = b""
        self.greeting = self.recv()
        if negotiate:
            r = self.cmd("qmp_capabilities")
            check(r == {"return": {}}, "qmp_capabilities: %r" % r)

    def send_raw(self, data):
        self.sock.sendall(data)

    def recv(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("control socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, command, qmp_id=None, **args):
        req = {"execute": command}
        if args:
            req["arguments"] = {k.replace("_", "-"): v
                                for k, v in args.items()}
        if qmp_id is not None:
            req["id"] = qmp_id
        self.send_raw(json.dumps(req).encode() + b"\n")
        return self.recv()

    def ok(self, command, **args):
        """cmd() that must succeed; returns the "return" value."""
        r = self.cmd(command, **args)
        check("return" in r, "%s %r: %r" % (command, args, r))
        return r["return"]

    def error(self, command, **args):
        """cmd() that must fail; returns (class, desc)."""
        r = self.cmd(command, **args)
        check("error" in r, "%s %r succeeded: %r" % (command, args, r))
        return r["error"]["class"], r["error"]["desc"]

    def close(self):
        self.sock.close()


def bitmaps_of(qmp, node):
    """{name: dirty-bitmaps entry} of node from query-named-block-nodes."""
    for n in qmp.ok("query-named-block-nodes"):
        if n["node-name"] == node:
            return {b["name"]: b for b in n["dirty-bitmaps"]}
    raise AssertionError("node %r not in query-named-block-nodes" % node)


def block_status(conn, offset, length, flags=0):
    """BLOCK_STATUS: the Result (extents by context id)."""
    return conn.request(CMD_BLOCK_STATUS, offset, length, flags)


def runs(ext, offset=0):
    """[(start, length, flags)] from [(length, flags)], merged."""
    out = []
    pos = offset
    for n, f in ext:
        if out and out[-1][2] == f and out[-1][0] + out[-1][1] == pos:
            out[-1] = (out[-1][0], out[-1][1] + n, f)
        else:
            out.append((pos, n, f))
        pos += n
    return out
