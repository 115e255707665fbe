#!/usr/bin/python3
"""Side-by-side NBD server benchmark: diskserve beside nbdkit and qemu-nbd.

Every server in a scenario serves its own identical copy of one image on a
Unix socket in /dev/shm and is driven by the same fio job (nbd engine).  The
servers run interleaved, round by round (A B C A B C ...), so that drift on a
shared machine hits all of them alike.  For each run the script records
fio's IOPS and bandwidth and the CPU time the server (all its threads and
children) and fio spent per request, read from /proc/PID/stat at the end of
fio's ramp and at the end of the run.  It prints a table per job and one
machine-readable RESULT line per server and job.

Run through bench/run.sh; bench/README.md explains how to read the output.
"""

import argparse
import ctypes
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf('SC_CLK_TCK')
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
REFERENCE = 'diskserve'
TMP_PREFIX = 'diskserve-bench.'


class Job:
    """One fio workload: access pattern, block size, queue depth, range."""

    def __init__(self, name, rw, bs, iodepth, numjobs=1, limit=None,
                 base=None, desc=''):
        self.name = name
        self.rw = rw
        self.bs = bs
        self.iodepth = iodepth
        self.numjobs = numjobs
        self.limit = limit      # 'data' restricts fio to the allocated part
        self.base = base        # qcow2-write: which fresh image to copy
        self.desc = desc

    @property
    def writes(self):
        return 'write' in self.rw

    @property
    def sequential(self):
        return not self.rw.startswith('rand')


class Server:
    """One server process kind in a scenario, with the image it serves."""

    def __init__(self, label, program, fmt, image_kind):
        self.label = label      # name in the tables
        self.program = program  # diskserve, nbdkit-file, nbdkit-null, ...
        self.fmt = fmt          # raw or qcow2 (None for nbdkit-null)
        self.image_kind = image_kind  # key into the scenario's images

    @property
    def is_diskserve(self):
        return self.program == 'diskserve'


class Scenario:
    def __init__(self, name, desc, servers, jobs, fresh_per_run=False,
                 check=False, read_only=False):
        self.name = name
        self.read_only = read_only  # every server exports read-only
        self.desc = desc
        self.servers = servers
        self.jobs = jobs
        self.fresh_per_run = fresh_per_run
        self.check = check


SCENARIOS = [
    Scenario(
        'raw', 'one raw image, fully written with random data',
        [Server('diskserve', 'diskserve', 'raw', 'raw'),
         Server('nbdkit-file', 'nbdkit-file', 'raw', 'raw'),
         Server('nbdkit-null', 'nbdkit-null', None, None),
         Server('qemu-nbd', 'qemu-nbd', 'raw', 'raw')],
        [Job('randread', 'randread', '4k', 32,
             desc='4k random read, QD32'),
         Job('randwrite', 'randwrite', '4k', 32,
             desc='4k random write, QD32'),
         Job('seqread', 'read', '1M', 8,
             desc='1M sequential read, QD8')]),
    Scenario(
        'qcow2-read', 'qcow2 with its first part allocated, exported '
        'read-only; reads restricted to the allocated part',
        [Server('diskserve', 'diskserve', 'qcow2', 'qcow2'),
         Server('qemu-nbd', 'qemu-nbd', 'qcow2', 'qcow2'),
         Server('diskserve-raw', 'diskserve', 'raw', 'raw')],
        [Job('randread', 'randread', '4k', 32, limit='data',
             desc='4k random read, QD32, allocated range'),
         Job('seqread', 'read', '1M', 8, limit='data',
             desc='1M sequential read, QD8, allocated range')],
        read_only=True),
    Scenario(
        'qcow2-write', 'qcow2 writes; a fresh image copy per run, '
        'checked with qemu-img check afterwards',
        [Server('diskserve', 'diskserve', 'qcow2', 'qcow2'),
         Server('qemu-nbd', 'qemu-nbd', 'qcow2', 'qcow2')],
        [Job('randwrite-allocated', 'randwrite', '4k', 32, limit='data',
             base='filled', desc='4k random write, QD32, allocated range'),
         Job('randwrite-allocating', 'randwrite', '4k', 32, base='empty',
             desc='4k random write, QD32, fresh image (allocating)'),
         Job('seqwrite-empty', 'write', '1M', 8, base='empty',
             desc='1M sequential write, QD8, fresh image'),
         Job('randwrite-allocating-8conn', 'randwrite', '4k', 4, numjobs=8,
             base='empty',
             desc='4k random write, 8 connections x QD4, fresh image')],
        fresh_per_run=True, check=True),
]


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


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True,
                             timeout=10).stdout
        return out.strip().splitlines()[0] if out.strip() else '?'
    except (OSError, subprocess.TimeoutExpired):
        return 'missing'


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = None
        self.live = set()
        self.out_file = None
        self.results = {}
        self.images = {}
        self.random_sources = {}

    # ---- output ---------------------------------------------------------

    def emit(self, line=''):
        print(line, flush=True)
        if self.out_file:
            self.out_file.write(line + '\n')
            self.out_file.flush()

    def verbose(self, msg):
        if self.args.verbose:
            log(msg)

    # ---- processes ------------------------------------------------------

    def spawn(self, argv, logpath=None):
        self.verbose('+ ' + ' '.join(shlex.quote(a) for a in argv))
        out = open(logpath, 'ab') if logpath else subprocess.DEVNULL
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=out, preexec_fn=_die_with_parent)
        finally:
            if logpath:
                out.close()
        self.live.add(p)
        return p

    def stop(self, p, timeout=20):
        """Stop p (SIGTERM, then SIGKILL) and return its exit status."""
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                log('warning: pid %d ignored SIGTERM for %d s; killing it'
                    % (p.pid, timeout))
                p.kill()
                p.wait()
        self.live.discard(p)
        return p.returncode

    def run_tool(self, argv, timeout=600):
        self.verbose('+ ' + ' '.join(shlex.quote(a) for a in argv))
        r = subprocess.run(argv, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RunError('%s failed (status %d): %s'
                           % (argv[0], r.returncode,
                              (r.stderr or r.stdout).strip()[-400:]))
        return r.stdout

    def cleanup(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for p in list(self.live):
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for p in list(self.live):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.live.clear()
        if self.tmp and os.path.isdir(self.tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self.out_file:
            self.out_file.close()
            self.out_file = None

    # ---- images ---------------------------------------------------------

    def path(self, name):
        return os.path.join(self.tmp, name)

    def random_source(self, size):
        """A raw file of size bytes of random data, made once per size."""
        if size in self.random_sources:
            return self.random_sources[size]
        p = self.path('random-%s.raw' % fmt_size(size))
        log('creating %s of random data in %s' % (fmt_size(size), p))
        chunk = 16 * MiB
        with open(p, 'wb') as f:
            left = size
            while left:
                n = min(chunk, left)
                f.write(os.urandom(n))
                left -= n
        self.random_sources[size] = p
        return p

    def copy(self, src, dst, size=None):
        shutil.copyfile(src, dst)
        if size is not None:
            os.truncate(dst, size)
        return dst

    def prepare_scenario(self, scen):
        """Make the base images for scen; returns kind -> path."""
        a = self.args
        if scen.name == 'raw':
            return {'raw': self.random_source(a.raw_size)}
        if scen.name == 'qcow2-read':
            src = self.random_source(a.qcow2_data)
            q = self.path('qcow2-read-base.qcow2')
            if not os.path.exists(q):
                log('creating %s qcow2 with %s allocated'
                    % (fmt_size(a.qcow2_size), fmt_size(a.qcow2_data)))
                self.run_tool(['qemu-img', 'convert', '-f', 'raw', '-O',
                               'qcow2', src, q])
                self.run_tool(['qemu-img', 'resize', '-f', 'qcow2', q,
                               str(a.qcow2_size)])
            r = self.path('qcow2-read-base.raw')
            if not os.path.exists(r):
                self.copy(src, r, a.qcow2_size)
            return {'qcow2': q, 'raw': r}
        if scen.name == 'qcow2-write':
            bases = {}
            if any(j.base == 'filled' for j in self.jobs_of(scen)):
                src = self.random_source(a.qcow2_data)
                q = self.path('qcow2-write-filled.qcow2')
                log('creating %s qcow2 with %s allocated'
                    % (fmt_size(a.qcow2_size), fmt_size(a.qcow2_data)))
                self.run_tool(['qemu-img', 'convert', '-f', 'raw', '-O',
                               'qcow2', src, q])
                self.run_tool(['qemu-img', 'resize', '-f', 'qcow2', q,
                               str(a.qcow2_size)])
                bases['filled'] = q
                # The last scenario: the source's memory is better spent on
                # the allocating runs' images.
                os.unlink(self.random_sources.pop(a.qcow2_data))
            e = self.path('qcow2-write-empty.qcow2')
            self.run_tool(['qemu-img', 'create', '-q', '-f', 'qcow2', e,
                           str(a.qcow2_size)])
            bases['empty'] = e
            return bases
        raise AssertionError(scen.name)

    def release_scenario(self):
        """Delete the scenario's images; random sources stay for reuse."""
        keep = set(self.random_sources.values())
        for name in os.listdir(self.tmp):
            p = self.path(name)
            if name.endswith(('.raw', '.qcow2')) and p not in keep:
                os.unlink(p)

    # ---- servers --------------------------------------------------------

    def server_missing(self, srv):
        """Why srv cannot run here, or None."""
        if srv.program == 'diskserve':
            if not os.access(self.args.diskserve, os.X_OK):
                return 'no diskserve binary at %s' % self.args.diskserve
            return None
        prog = {'nbdkit-file': 'nbdkit', 'nbdkit-null': 'nbdkit',
                'qemu-nbd': 'qemu-nbd'}[srv.program]
        if not shutil.which(prog):
            return '%s not installed' % prog
        return None

    def server_argv(self, srv, image, sock, read_only):
        a = self.args
        ro = ['-r'] if read_only else []
        if srv.program == 'diskserve':
            argv = [a.diskserve, '-k', sock, '-f', srv.fmt] + ro
            if a.threads:
                argv += ['--threads', str(a.threads)]
            return argv + shlex.split(a.diskserve_args) + [image]
        if srv.program == 'nbdkit-file':
            return ['nbdkit', '-f', '-U', sock] + ro + ['file',
                                                       'file=' + image]
        if srv.program == 'nbdkit-null':
            return ['nbdkit', '-f', '-U', sock, 'null',
                    'size=%d' % a.raw_size]
        if srv.program == 'qemu-nbd':
            # -t: fio connects twice (once to size the device, once for the
            # job); without it qemu-nbd exits after the first disconnect.
            return ['qemu-nbd', '-k', sock, '-f', srv.fmt, '-e', '16',
                    '--cache=writeback', '--aio=threads', '-t'] + ro + [image]
        raise AssertionError(srv.program)

    def tail(self, logpath, n=4):
        """The last n lines of a log, joined, for an error message."""
        try:
            with open(logpath, errors='replace') as f:
                lines = f.read().strip().splitlines()
        except OSError:
            return ''
        text = ' | '.join(lines[-n:]).replace(self.tmp + '/', '')
        return text[-300:]

    def wait_ready(self, p, sock, logpath, timeout=30):
        """Wait until the server at sock sends the NBD greeting."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RunError('server exited with status %s at start: %s'
                               % (p.returncode, self.tail(logpath)))
            if os.path.exists(sock):
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.settimeout(5)
                        s.connect(sock)
                        if s.recv(8, socket.MSG_WAITALL) == b'NBDMAGIC':
                            return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RunError('server not ready after %d s' % timeout)

    def start_server(self, srv, image, tag, read_only=False):
        sock = self.path('%s.sock' % srv.label)
        if os.path.exists(sock):
            os.unlink(sock)
        logpath = self.path('server.log')
        with open(logpath, 'w'):
            pass
        p = self.spawn(self.server_argv(srv, image, sock, read_only),
                       logpath)
        try:
            self.wait_ready(p, sock, logpath)
        except BaseException:
            self.stop(p)
            self.save(logpath, tag + '.server.log')
            raise
        return p, sock, logpath

    def save(self, path, name):
        if self.args.save and os.path.exists(path):
            shutil.copyfile(path, os.path.join(self.args.save, name))

    def probe_writes(self, srv, base):
        """Why srv cannot write a qcow2 image, or None."""
        img = self.copy(base, self.path('probe.qcow2'))
        try:
            p, sock, _ = self.start_server(srv, img, 'qcow2-write-probe')
            try:
                r = subprocess.run(
                    ['qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 0 64k',
                     '-c', 'flush', 'nbd+unix:///?socket=' + sock],
                    stdin=subprocess.DEVNULL, capture_output=True,
                    text=True, timeout=60)
            finally:
                self.stop(p)
            if r.returncode != 0:
                err = ((r.stderr + r.stdout).strip().splitlines()
                       or ['?'])[-1]
                err = err.replace('nbd+unix:///?socket=' + sock, 'export')
                return 'qcow2 write refused: %s' % err[:160]
            word, text = self.check_image(img)
            if word != 'ok':
                return 'image broken after a 64 KiB write: %s' % text[:160]
            return None
        except RunError as e:
            return 'write probe failed: %s' % str(e)[:160]
        finally:
            os.unlink(img)

    # ---- one run --------------------------------------------------------

    def fio_argv(self, job, sock, json_path):
        a = self.args
        argv = ['fio', '--name=' + job.name, '--ioengine=nbd',
                '--uri=nbd+unix:///?socket=' + sock,
                '--rw=' + job.rw, '--bs=' + job.bs,
                '--iodepth=%d' % job.iodepth,
                '--numjobs=%d' % job.numjobs, '--group_reporting',
                '--time_based', '--runtime=%g' % a.runtime,
                '--ramp_time=%g' % a.ramp,
                '--norandommap', '--randrepeat=0',
                '--output-format=json', '--output=' + json_path]
        if job.limit == 'data':
            argv.append('--size=%d' % a.qcow2_data)
        if job.writes:
            argv.append('--end_fsync=1')
        return argv

    def run_fio(self, job, sock, server, tag):
        """Run fio against sock; returns the measurement dict."""
        a = self.args
        json_path = self.path('fio.json')
        if os.path.exists(json_path):
            os.unlink(json_path)
        fio_log = self.path('fio.log')
        with open(fio_log, 'w'):
            pass
        fio = self.spawn(self.fio_argv(job, sock, json_path), fio_log)
        t0 = time.monotonic()
        ramp_end = t0 + a.ramp
        deadline = ramp_end + a.runtime + 120
        srv0 = fio0 = None
        timed_out = False
        # Poll rather than block so that the CPU window can start when
        # fio's ramp ends, like its statistics, and a hung run is caught.
        while True:
            pid, status, ru = os.wait4(fio.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if srv0 is None and now >= ramp_end:
                srv0 = proc_tree_ticks(server.pid)
                fio0 = proc_tree_ticks(fio.pid)
            if now > deadline and not timed_out:
                timed_out = True
                fio.kill()
            time.sleep(min(0.05, max(0.001, ramp_end - now))
                       if srv0 is None else 0.05)
        srv1 = proc_tree_ticks(server.pid)
        fio.returncode = os.waitstatus_to_exitcode(status)
        self.live.discard(fio)
        if timed_out:
            raise RunError('fio did not finish within %g s; killed'
                           % (deadline - t0))
        if fio.returncode != 0:
            raise RunError('fio failed (status %s): %s'
                           % (fio.returncode, self.tail(fio_log)))
        if server.poll() is not None or srv1 is None:
            raise RunError('server died during the run (status %s)'
                           % server.returncode)
        if srv0 is None:
            raise RunError('fio ended within its ramp time')
        try:
            with open(json_path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise RunError('no fio results: %s; %s'
                           % (e, self.tail(fio_log)))
        self.save(json_path, tag + '.json')
        j = data['jobs'][0]
        if j.get('error'):
            raise RunError('fio job error %s: %s'
                           % (j['error'], self.tail(fio_log)))
        ios = sum(j[d]['total_ios'] for d in ('read', 'write'))
        iops = sum(j[d]['iops'] for d in ('read', 'write'))
        bw = sum(j[d]['bw_bytes'] for d in ('read', 'write'))
        if ios == 0:
            raise RunError('fio completed no requests')
        srv_cpu = (srv1 - srv0) / CLK_TCK
        m = {'iops': iops, 'mibs': bw / MiB, 'ios': ios, 'srv_cpu': srv_cpu,
             'srv_us': srv_cpu / ios * 1e6}
        if fio0 is not None:
            fio_cpu = ru.ru_utime + ru.ru_stime - fio0 / CLK_TCK
            m['fio_us'] = max(0.0, fio_cpu) / ios * 1e6
        return m

    def check_image(self, img):
        """Run qemu-img check; returns (verdict word, summary line)."""
        r = subprocess.run(['qemu-img', 'check', '-f', 'qcow2', img],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=600)
        text = (r.stdout + r.stderr).strip()
        word = {0: 'ok', 2: 'corrupt', 3: 'leaks'}.get(r.returncode, 'error')
        lines = [ln for ln in text.splitlines() if ln.strip()]
        summary = lines[0] if word == 'ok' else ' / '.join(lines[-3:])
        return word, summary

    def measure(self, scen, job, srv, image, rnd):
        tag = '%s-%s-%s-r%d' % (scen.name, job.name, srv.label, rnd)
        p, sock, logpath = self.start_server(srv, image, tag,
                                             scen.read_only)
        try:
            m = self.run_fio(job, sock, p, tag)
        except RunError as e:
            if p.poll() is not None:
                e = RunError('%s; server log: %s' % (e, self.tail(logpath)))
            raise e
        finally:
            status = self.stop(p)
            self.save(logpath, tag + '.server.log')
        if status not in (0, -signal.SIGTERM):
            log('warning: %s exited with status %s after SIGTERM'
                % (srv.label, status))
        if scen.check:
            m['check'], m['check_text'] = self.check_image(image)
        return m

    # ---- scenario loop --------------------------------------------------

    def jobs_of(self, scen):
        want = self.args.selected.get(scen.name)
        return [j for j in scen.jobs if not want or j.name in want]

    def servers_of(self, scen):
        want = self.args.servers
        return [s for s in scen.servers if not want or s.label in want]

    def run_scenario(self, scen):
        jobs, servers = self.jobs_of(scen), self.servers_of(scen)
        if not jobs or not servers:
            return
        self.emit('## scenario %s: %s' % (scen.name, scen.desc))
        na = {}
        for s in servers:
            why = self.server_missing(s)
            if why:
                na[s.label] = why
        bases = self.prepare_scenario(scen)
        copies = {}
        users = {}
        for s in servers:
            if s.label in na or scen.fresh_per_run or s.image_kind is None:
                continue
            users.setdefault(s.image_kind, []).append(s)
        for kind, group in users.items():
            for i, s in enumerate(group):
                dst = self.path('%s-%s.%s' % (scen.name, s.label, s.fmt))
                last = i == len(group) - 1
                if last and bases[kind] not in self.random_sources.values():
                    os.rename(bases[kind], dst)  # saves one copy's memory
                else:
                    self.copy(bases[kind], dst)
                copies[s.label] = dst
        if scen.name == 'qcow2-write':
            for s in servers:
                if s.is_diskserve and s.label not in na:
                    why = self.probe_writes(s, bases['empty'])
                    if why:
                        na[s.label] = why
        for s in servers:
            if s.label in na:
                log('%s: %s: n/a (%s)' % (scen.name, s.label, na[s.label]))
        for job in jobs:
            res = {s.label: [] for s in servers}
            for rnd in range(1, self.args.rounds + 1):
                for s in servers:
                    if s.label in na:
                        continue
                    if scen.fresh_per_run:
                        image = self.copy(bases[job.base],
                                          self.path('run.%s' % s.fmt))
                    else:
                        image = copies.get(s.label, '')
                    what = '[%s %s round %d/%d] %s' % (
                        scen.name, job.name, rnd, self.args.rounds, s.label)
                    try:
                        m = self.measure(scen, job, s, image, rnd)
                    except RunError as e:
                        log('%s: FAILED: %s' % (what, e))
                        m = {'error': str(e)}
                    else:
                        msg = '%s: %.0f IOPS, %.1f MiB/s, server %.2f us/req' \
                              % (what, m['iops'], m['mibs'], m['srv_us'])
                        if 'check' in m:
                            msg += ', qemu-img check: %s' % m['check_text']
                        log(msg)
                    finally:
                        if scen.fresh_per_run and os.path.exists(image):
                            os.unlink(image)
                    res[s.label].append(m)
            self.report_job(scen, job, servers, res, na)
        self.release_scenario()

    # ---- reporting ------------------------------------------------------

    @staticmethod
    def summarize(runs):
        ok = [m for m in runs if 'error' not in m]
        if not ok:
            return None
        s = {'iops': statistics.median(m['iops'] for m in ok),
             'mibs': statistics.median(m['mibs'] for m in ok),
             'srv_us': statistics.median(m['srv_us'] for m in ok),
             'ok': len(ok), 'runs': len(runs)}
        fio = [m['fio_us'] for m in ok if 'fio_us' in m]
        if fio:
            s['fio_us'] = statistics.median(fio)
        checks = [m['check'] for m in runs if 'check' in m]
        if checks:
            bad = [c for c in checks if c != 'ok']
            s['check'] = bad[0] if bad else 'ok'
            s['check_n'] = '%d/%d' % (len(checks) - len(bad), len(checks))
        return s

    def report_job(self, scen, job, servers, res, na):
        a = self.args
        conns = '' if job.numjobs > 1 else ', 1 connection'
        self.emit()
        self.emit('### %s / %s: %s%s, %g s (+%g s ramp) x %d rounds'
                  % (scen.name, job.name, job.desc, conns, a.runtime, a.ramp,
                     a.rounds))
        summ = {label: self.summarize(runs) for label, runs in res.items()}
        ref = summ.get(REFERENCE)
        rounds = ['round %d' % (i + 1) for i in range(a.rounds)]
        head = '%-14s' % 'server' + ''.join('%10s' % r for r in rounds)
        head += '%10s%9s%13s%12s%12s' % ('median', 'MiB/s', 'diskserve/x',
                                         'srv us/req', 'fio us/req')
        if scen.check:
            head += '  qemu-img check'
        self.emit(head)
        for s in servers:
            label = s.label
            line = '%-14s' % label
            if label in na:
                self.emit(line + 'n/a: ' + na[label])
                continue
            for m in res[label]:
                line += '%10s' % ('FAILED' if 'error' in m
                                  else '%.0f' % m['iops'])
            line += ' ' * 10 * (a.rounds - len(res[label]))
            su = summ[label]
            if su is None:
                self.emit(line + '  all rounds failed')
                continue
            ratio = ref['iops'] / su['iops'] if ref else None
            line += '%10.0f%9.1f%13s%12.2f%12s' % (
                su['iops'], su['mibs'],
                '%.2f' % ratio if ratio is not None else 'n/a',
                su['srv_us'],
                '%.2f' % su['fio_us'] if 'fio_us' in su else '-')
            if 'check' in su:
                line += '  %s (%s ok)' % (su['check'], su['check_n'])
            self.emit(line)
        for label, runs in res.items():
            for i, m in enumerate(runs):
                if 'error' in m:
                    self.emit('  %s round %d failed: %s'
                              % (label, i + 1, m['error']))
                elif m.get('check', 'ok') != 'ok':
                    self.emit('  %s round %d qemu-img check: %s'
                              % (label, i + 1, m['check_text']))
        for s in servers:
            self.emit(self.result_line(scen, job, s.label, res.get(s.label),
                                       summ.get(s.label), ref,
                                       na.get(s.label)))
        self.results.setdefault(scen.name, {})[job.name] = summ

    def result_line(self, scen, job, label, runs, su, ref, why):
        fields = [('scenario', scen.name), ('job', job.name),
                  ('server', label)]
        if why:
            fields += [('status', 'n/a'), ('reason', why)]
        elif su is None:
            fields += [('status', 'fail'),
                       ('reason', runs[-1]['error'] if runs else '?')]
        else:
            fields += [
                ('status', 'ok' if su['ok'] == su['runs'] else 'partial'),
                ('iops', '%.0f' % su['iops']),
                ('mibs', '%.1f' % su['mibs']),
                ('ratio', '%.3f' % (ref['iops'] / su['iops']) if ref
                 else 'n/a'),
                ('cpu_us_per_req', '%.3f' % su['srv_us']),
                ('fio_cpu_us_per_req', '%.3f' % su['fio_us']
                 if 'fio_us' in su else 'n/a'),
                ('rounds', '%d/%d' % (su['ok'], su['runs'])),
                ('iops_rounds', ','.join('%.0f' % m['iops'] if 'error'
                                         not in m else 'fail'
                                         for m in runs))]
            if 'check' in su:
                fields.append(('check', su['check']))
        return 'RESULT ' + ' '.join('%s=%s' % (k, shlex.quote(str(v)))
                                    for k, v in fields)

    # ---- main -----------------------------------------------------------

    def header(self):
        a = self.args
        rev = '?'
        try:
            rev = subprocess.run(
                ['git', '-C', os.path.dirname(os.path.abspath(__file__)),
                 'describe', '--always', '--dirty'], capture_output=True,
                text=True, timeout=10).stdout.strip() or '?'
        except OSError:
            pass
        with open('/proc/loadavg') as f:
            load = f.read().split()[0]
        info = [('date', time.strftime('%Y-%m-%dT%H:%M:%S')),
                ('kernel', os.uname().release),
                ('cpus', os.cpu_count()), ('load', load),
                ('runtime', '%g' % a.runtime), ('ramp', '%g' % a.ramp),
                ('rounds', a.rounds), ('diskserve', a.diskserve),
                ('source', rev), ('fio', tool_version(['fio', '--version'])),
                ('nbdkit', tool_version(['nbdkit', '--version'])),
                ('qemu_nbd', tool_version(['qemu-nbd', '--version']))]
        self.emit('# diskserve side-by-side benchmark')
        self.emit('RUN ' + ' '.join('%s=%s' % (k, shlex.quote(str(v)))
                                    for k, v in info))

    def estimate(self, scens):
        runs = 0
        for scen in scens:
            runs += len(self.jobs_of(scen)) * len(self.servers_of(scen))
        runs *= self.args.rounds
        secs = runs * (self.args.runtime + self.args.ramp + 1)
        log('%d runs, at least %d min %02d s' % (runs, secs // 60, secs % 60))

    def main(self):
        a = self.args
        remove_stale_dirs(a.tmpdir)
        self.tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=a.tmpdir)
        with open(self.path('owner.pid'), 'w') as f:
            f.write('%d\n' % os.getpid())
        if a.output:
            self.out_file = open(a.output, 'w')
        if a.save:
            os.makedirs(a.save, exist_ok=True)
        scens = [s for s in SCENARIOS if s.name in a.selected]
        self.header()
        self.estimate(scens)
        for scen in scens:
            self.run_scenario(scen)
            self.emit()
        with open('/proc/loadavg') as f:
            self.emit('# done; load average now %s' % f.read().split()[0])


def parse_args(argv):
    names = [s.name for s in SCENARIOS]
    p = argparse.ArgumentParser(
        prog='bench/run.sh',
        description='Benchmark diskserve side by side with nbdkit and '
        'qemu-nbd over NBD on Unix sockets, driven by fio.',
        epilog='Scenarios: %s.  A scenario may name jobs: raw:randread,'
        'seqread.  DISKSERVE in the environment overrides the binary path.'
        % ', '.join(names))
    p.add_argument('targets', nargs='*', metavar='[BUILDDIR] [SCENARIO]',
                   help='a build directory holding diskserve (default: the '
                   'current directory), then scenarios (default: all)')
    p.add_argument('-t', '--runtime', type=float, default=20,
                   help='measured seconds per fio run (default 20)')
    p.add_argument('--ramp', type=float, default=2,
                   help='unmeasured seconds before each run (default 2)')
    p.add_argument('-r', '--rounds', type=int, default=2,
                   help='rounds; servers are interleaved within each '
                   '(default 2)')
    p.add_argument('-s', '--servers',
                   help='comma-separated subset of servers, e.g. '
                   'diskserve,qemu-nbd')
    p.add_argument('-o', '--output', help='also write the report here')
    p.add_argument('--save', metavar='DIR',
                   help='keep fio JSON and server logs in DIR')
    p.add_argument('--raw-size', type=parse_size, default=GiB,
                   help='raw scenario image size (default 1G)')
    p.add_argument('--qcow2-size', type=parse_size, default=4 * GiB,
                   help='qcow2 virtual size (default 4G)')
    p.add_argument('--qcow2-data', type=parse_size, default=GiB,
                   help='allocated part of the qcow2 read image, and the '
                   'range of the jobs restricted to it (default 1G)')
    p.add_argument('--threads', type=int,
                   help='diskserve --threads N (default: its own)')
    p.add_argument('--diskserve-args', default='',
                   help='extra diskserve options, shell-quoted')
    p.add_argument('--tmpdir', default='/dev/shm',
                   help='where images and sockets go (default /dev/shm)')
    p.add_argument('-l', '--list', action='store_true',
                   help='list scenarios, jobs and servers, then exit')
    p.add_argument('-v', '--verbose', action='store_true',
                   help='print every command run')
    a = p.parse_args(argv)

    if a.list:
        for s in SCENARIOS:
            print('%s: %s' % (s.name, s.desc))
            print('  servers: %s' % ', '.join(x.label for x in s.servers))
            for j in s.jobs:
                print('  %-28s %s' % (j.name, j.desc))
        sys.exit(0)

    builddir = '.'
    a.selected = {}
    for i, t in enumerate(a.targets):
        name, _, jobs = t.partition(':')
        if name in names:
            scen = SCENARIOS[names.index(name)]
            want = set(jobs.split(',')) if jobs else set()
            bad = want - {j.name for j in scen.jobs}
            if bad:
                p.error('%s has no job %s' % (name, ', '.join(sorted(bad))))
            a.selected.setdefault(name, set()).update(want)
        elif i == 0 and os.path.isdir(t):
            builddir = t
        else:
            p.error('unknown scenario %r (have: %s)' % (t, ', '.join(names)))
    if not a.selected:
        a.selected = {n: set() for n in names}
    a.diskserve = os.environ.get('DISKSERVE') or \
        os.path.join(builddir, 'diskserve')
    a.diskserve = os.path.abspath(a.diskserve)
    if a.servers:
        a.servers = set(a.servers.split(','))
        known = {x.label for s in SCENARIOS for x in s.servers}
        if a.servers - known:
            p.error('unknown server %s (have: %s)'
                    % (', '.join(sorted(a.servers - known)),
                       ', '.join(sorted(known))))
    if a.rounds < 1 or a.runtime <= 0 or a.ramp < 0:
        p.error('rounds must be >= 1, runtime > 0, ramp >= 0')
    if a.qcow2_data > a.qcow2_size:
        p.error('--qcow2-data exceeds --qcow2-size')
    return a


def main(argv):
    args = parse_args(argv)
    for tool in ('fio', 'qemu-img', 'qemu-io'):
        if not shutil.which(tool):
            log('error: %s is required' % tool)
            return 2
    bench = Bench(args)

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        bench.main()
    except Interrupted as e:
        log('interrupted by %s; cleaning up' % e)
        return 130
    except RunError as e:
        log('error: %s' % e)
        return 1
    finally:
        bench.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
