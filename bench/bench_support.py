"""Helpers of the side-by-side benchmark (bench/side_by_side.py): sizes
and logging, process CPU time from /proc, the machine's own load, page
cache warming, stale work directories, tool versions, when fio's job has
connected, and system call counting with perf."""

import argparse
import ctypes
import mmap
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from bench_scenarios import GiB, KiB, MiB, TMP_PREFIX


class Interrupted(Exception):
    pass


class RunError(Exception):
    pass


def parse_size(text):
    units = {'': 1, 'K': KiB, 'M': MiB, 'G': GiB, 'T': GiB * KiB}
    t = text.strip().upper().rstrip('B').rstrip('I')
    suffix = t[-1:] if t[-1:].isalpha() else ''
    try:
        n = float(t[:len(t) - len(suffix)])
        return int(n * units[suffix])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError('bad size: %r' % text)


def fmt_size(n):
    for unit, mult in (('G', GiB), ('M', MiB), ('K', KiB)):
        if n % mult == 0:
            return '%d%s' % (n // mult, unit)
    return str(n)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    # PR_SET_PDEATHSIG: a server outlives no benchmark, even one killed
    # with SIGKILL (where our own cleanup cannot run).
    _libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def proc_tree_ticks(root):
    """CPU ticks (user + system, with reaped children) of root and all its
    descendants; threads are counted by /proc/PID/stat itself."""
    stats = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                data = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: split after the last ')'.
        fields = data[data.rfind(')') + 2:].split()
        # fields[0] is field 3 (state): ppid is field 4, utime..cstime 14-17.
        stats[int(entry)] = (int(fields[1]),
                             sum(int(x) for x in fields[11:15]))
    if root not in stats:
        return None
    children = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def machine_busy_ticks():
    """Non-idle ticks of all CPUs together, from /proc/stat."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]     # minus idle and iowait


def warm_memory(size):
    """Fault in size bytes of anonymous memory and free it again; returns
    microseconds per 4 KiB page.  In a VM whose free memory goes back to
    the host (virtio-balloon free page reporting), the first touch of a
    page costs a host fault of several microseconds; a tmpfs image that
    grows during a run pays it inside the server's write() calls.  Pages
    freed just now are the first the allocator hands out again, so the
    run that follows writes into memory the host already backs."""
    t = time.monotonic()
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS |
                  getattr(mmap, 'MAP_POPULATE', 0x8000))
    m.close()
    return (time.monotonic() - t) / (size / 4096) * 1e6


def fresh_page_us(directory, pages=4096):
    """CPU microseconds per 4 KiB write into a page a new tmpfs file does
    not have yet (Python's own cost included, about 1 us): what a server
    pays on top of an in-place write when a write lands in a new page."""
    path = os.path.join(directory, 'page-probe')
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, 1 << 30)
        buf = b'\x5a' * 4096
        offs = random.sample(range(1 << 18), pages)
        t = time.thread_time()
        for o in offs:
            os.pwrite(fd, buf, o * 4096)
        return (time.thread_time() - t) / pages * 1e6
    finally:
        os.close(fd)
        os.unlink(path)


def remove_stale_dirs(parent):
    """Remove work directories left by benchmarks that were SIGKILLed."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        d = os.path.join(parent, name)
        if not name.startswith(TMP_PREFIX) or not os.path.isdir(d):
            continue
        try:
            with open(os.path.join(d, 'owner.pid')) as f:
                pid = int(f.read())
            os.kill(pid, 0)
            continue            # its benchmark is still running
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue            # not ours to judge
        log('removing %s, left by a benchmark that was killed' % d)
        shutil.rmtree(d, ignore_errors=True)


def fs_type(path):
    """The type of the file system path is on, from /proc/self/mountinfo."""
    path = os.path.realpath(path)
    best, kind = '', '?'
    try:
        with open('/proc/self/mountinfo') as f:
            for line in f:
                left, _, right = line.partition(' - ')
                mnt = left.split()[4].replace('\\040', ' ')
                inside = path == mnt or path.startswith(
                    mnt.rstrip('/') + '/')
                if inside and len(mnt) >= len(best):
                    best, kind = mnt, right.split()[0]
    except (OSError, IndexError):
        pass
    return kind


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True,
                             timeout=10).stdout
        return out.strip().splitlines()[0] if out.strip() else '?'
    except (OSError, subprocess.TimeoutExpired):
        return 'missing'


def fio_job_connected(fio_pid):
    """Whether one of fio's job processes (its children) holds a socket:
    the job has connected to the server, and its ramp time starts.  fio
    sizes the export from its main process before it forks the jobs, and a
    job connects a few hundred milliseconds after fio starts (longer on a
    busy machine).  None when the kernel lists no children in /proc."""
    try:
        with open('/proc/%d/task/%d/children' % (fio_pid, fio_pid)) as f:
            kids = f.read().split()
    except FileNotFoundError:
        return None
    except OSError:
        return False
    for kid in kids:
        try:
            fds = os.listdir('/proc/%s/fd' % kid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink('/proc/%s/fd/%s' % (kid, fd)).startswith(
                        'socket:'):
                    return True
            except OSError:
                pass
    return False


# System calls counted one by one with --syscalls, on top of the total
# (raw_syscalls:sys_enter): the ones an NBD server makes per request, or
# waits in.  Every event is switched with the server's threads at each
# context switch, so the list is short; the rest is counted as "other".
SYSCALLS = ('read', 'readv', 'recvfrom', 'recvmsg', 'pread64', 'preadv',
            'preadv2', 'pwrite64', 'pwritev', 'pwritev2', 'write', 'writev',
            'sendto', 'sendmsg', 'splice', 'vmsplice', 'sendfile64',
            'io_uring_enter', 'epoll_wait', 'epoll_pwait', 'poll', 'ppoll',
            'futex', 'fsync', 'fdatasync', 'fallocate', 'lseek', 'madvise',
            'sched_yield')
TOTAL_EVENT = 'raw_syscalls:sys_enter'


def syscall_events():
    """The perf events --syscalls counts, or (None, why) when perf cannot
    count system calls here."""
    if not shutil.which('perf'):
        return None, 'perf not installed'
    try:
        r = subprocess.run(['perf', 'stat', '-x', ',', '-e', TOTAL_EVENT,
                            '--', 'true'], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, 'perf stat failed: %s' % e
    if r.returncode != 0 or TOTAL_EVENT not in r.stderr or \
            '<not' in r.stderr:
        return None, 'perf stat -e %s failed: %s' % (
            TOTAL_EVENT, (r.stderr.strip().splitlines() or ['?'])[-1][:160])
    # perf mounted tracefs if it was not; the syscall events it has:
    have = None
    for d in ('/sys/kernel/tracing/events/syscalls',
              '/sys/kernel/debug/tracing/events/syscalls'):
        try:
            have = set(os.listdir(d))
            break
        except OSError:
            pass
    events = [TOTAL_EVENT]
    if have:
        events += ['syscalls:sys_enter_' + n for n in SYSCALLS
                   if 'sys_enter_' + n in have]
    return events, None


class SyscallCount:
    """perf stat attached to a server process (all threads, and threads
    started later), counting only between enable() and disable(): started
    with its events disabled (-D -1) and switched through a control FIFO,
    so that the window is the CPU time's, not perf's start-up."""

    def __init__(self, bench, pid, events):
        self.bench = bench
        self.out = bench.path('perf.out')
        self.logpath = bench.path('perf.log')
        ctl, ack = bench.path('perf.ctl'), bench.path('perf.ack')
        for f in (self.out, ctl, ack):
            if os.path.exists(f):
                os.unlink(f)
        os.mkfifo(ctl, 0o600)
        os.mkfifo(ack, 0o600)
        # O_RDWR: opening a FIFO so never blocks, and perf's own opens of
        # the other ends do not wait for us.
        self.ctl = os.open(ctl, os.O_RDWR)
        self.ack = os.open(ack, os.O_RDWR | os.O_NONBLOCK)
        self.proc = None
        try:
            self.proc = bench.spawn(
                ['perf', 'stat', '-x', ',', '-o', self.out, '-D', '-1',
                 '--control', 'fifo:%s,%s' % (ctl, ack), '-p', str(pid),
                 '-e', ','.join(events)], self.logpath)
            self.wait_log('Events disabled', 30)
        except BaseException:
            self.close()
            raise

    def wait_log(self, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.logpath, errors='replace') as f:
                if text in f.read():
                    return
            if self.proc.poll() is not None:
                raise RunError('perf stat exited (status %s): %s'
                               % (self.proc.returncode,
                                  self.bench.tail(self.logpath)))
            time.sleep(0.01)
        raise RunError('perf stat not ready after %d s' % timeout)

    def command(self, cmd):
        os.write(self.ctl, cmd.encode() + b'\n')
        got, deadline = b'', time.monotonic() + 5
        while b'ack' not in got:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RunError('perf stat did not acknowledge %s' % cmd)
            try:
                got += os.read(self.ack, 64)
            except BlockingIOError:
                time.sleep(0.001)

    def enable(self):
        self.command('enable')

    def disable(self):
        self.command('disable')

    def finish(self):
        """Stop perf; returns {event: count}."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            raise RunError('perf stat did not exit')
        finally:
            self.close()
        counts = {}
        with open(self.out) as f:
            for line in f:
                v = line.strip().split(',')
                if len(v) < 3 or line.startswith('#'):
                    continue
                try:
                    counts[v[2]] = int(float(v[0]))
                except ValueError:
                    pass        # <not counted>, <not supported>
        if TOTAL_EVENT not in counts:
            raise RunError('perf stat counted no system calls: %s'
                           % self.bench.tail(self.logpath))
        return counts

    def close(self):
        if self.proc is not None:
            self.bench.stop(self.proc, timeout=5)
        for fd in (self.ctl, self.ack):
            try:
                os.close(fd)
            except OSError:
                pass
        self.ctl = self.ack = -1
