#!/usr/bin/python3
"""Side-by-side NBD server benchmark: diskserve beside nbdkit and qemu-nbd.

Every server in a scenario serves its own identical copy of one image on a
Unix socket in /dev/shm and is driven by the same fio job (nbd engine).
qcow2-flush keeps its images on a real file system (--disk-tmpdir) instead,
because a flush on tmpfs is free.  The
servers run interleaved, round by round (A B C A B C ...), so that drift on a
shared machine hits all of them alike.  For each run the script records
fio's IOPS and bandwidth and the CPU time the server (all its threads and
children) and fio spent per request, read from /proc/PID/stat at the end of
fio's ramp and at the end of the run, and, with --syscalls, the system
calls the server made in the same window (perf stat).  It prints a table
per job and one machine-readable RESULT line per server and job.

Run through bench/run.sh; bench/README.md explains how to read the output.
The scenarios are in bench_scenarios.py, the helpers in bench_support.py.
"""

import argparse
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

sys.dont_write_bytecode = True   # keep the source tree clean
from bench_scenarios import (  # noqa: E402
    BASELINE_OF, BASELINE_SUFFIX, CLK_TCK, DEFAULT_RUNTIME, GiB, MiB,
    REFERENCE, SCENARIOS, TMP_PREFIX)
from bench_support import (  # noqa: E402
    Interrupted, RunError, SyscallCount, TOTAL_EVENT, _die_with_parent,
    fio_job_connected, fmt_size, fresh_page_us, fs_type, log,
    machine_busy_ticks, parse_size, proc_tree_ticks, remove_stale_dirs,
    syscall_events, tool_version, warm_memory)


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = None
        self.disk_tmp = None    # work directory in --disk-tmpdir, if needed
        self.live = set()
        self.out_file = None
        self.results = {}
        self.images = {}
        self.random_sources = {}
        self.runtime = args.runtime     # of the scenario being run
        self.syscall_events = None      # perf events, with --syscalls

    # ---- output ---------------------------------------------------------

    def emit(self, line=''):
        print(line, flush=True)
        if self.out_file:
            self.out_file.write(line + '\n')
            self.out_file.flush()

    def emit_failures(self, res):
        """One line for each round that failed or whose image qemu-img
        check found wrong."""
        for label, runs in res.items():
            for i, m in enumerate(runs):
                if 'error' in m:
                    self.emit('  %s round %d failed: %s'
                              % (label, i + 1, m['error']))
                elif m.get('check', 'ok') != 'ok':
                    self.emit('  %s round %d qemu-img check: %s'
                              % (label, i + 1, m['check_text']))

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
        for d in (self.tmp, self.disk_tmp):
            if d and os.path.isdir(d):
                shutil.rmtree(d, ignore_errors=True)
        if self.out_file:
            self.out_file.close()
            self.out_file = None

    # ---- images ---------------------------------------------------------

    def path(self, name):
        return os.path.join(self.tmp, name)

    def disk_path(self, name):
        return os.path.join(self.disk_tmp, name)

    def image_path(self, scen, name):
        """Where scen keeps an image: --disk-tmpdir or --tmpdir."""
        return (self.disk_path if scen.on_disk else self.path)(name)

    @staticmethod
    def settle(path):
        """fsync path, then read it once: the image is on the disk and in
        the page cache before a run, so the first flush does not write back
        the whole copy, and reads hit the cache rather than the disk."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            while os.read(fd, 16 * MiB):
                pass
        finally:
            os.close(fd)

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
        if scen.name == 'throughput':
            src = self.random_source(a.raw_size)
            bases = {'raw': src}
            servers = self.servers_of(scen)
            if any(s.fmt == 'qcow2' for s in servers):
                q = self.path('throughput-filled.qcow2')
                log('creating a %s qcow2, all allocated, from the raw image'
                    % fmt_size(a.raw_size))
                self.run_tool(['qemu-img', 'convert', '-f', 'raw', '-O',
                               'qcow2', src, q])
                bases['qcow2'] = q
                if any(j.base == 'empty' for j in self.jobs_of(scen)):
                    e = self.path('throughput-empty.qcow2')
                    self.run_tool(['qemu-img', 'create', '-q', '-f', 'qcow2',
                                   e, str(a.raw_size)])
                    bases['empty'] = e
            return bases
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
        if scen.name == 'vhdx':
            # The size of the allocated part: a fresh copy per run, and
            # the allocating jobs fill at most that much of /dev/shm.
            bases = {}
            if any(j.base == 'filled' for j in self.jobs_of(scen)):
                src = self.random_source(a.qcow2_data)
                v = self.path('vhdx-filled.vhdx')
                log('creating a %s dynamic VHDX, all allocated'
                    % fmt_size(a.qcow2_data))
                self.run_tool(['qemu-img', 'convert', '-f', 'raw', '-O',
                               'vhdx', '-o', 'subformat=dynamic', src, v])
                bases['filled'] = v
            e = self.path('vhdx-empty.vhdx')
            self.run_tool(['qemu-img', 'create', '-q', '-f', 'vhdx', '-o',
                           'subformat=dynamic,block_size=1M', e,
                           str(a.qcow2_data)])
            bases['empty'] = e
            return bases
        if scen.name == 'qcow2-flush':
            src = self.random_source(a.qcow2_data)
            q = self.disk_path('qcow2-flush-base.qcow2')
            log('creating %s qcow2 with %s allocated in %s'
                % (fmt_size(a.qcow2_size), fmt_size(a.qcow2_data),
                   self.disk_tmp))
            self.run_tool(['qemu-img', 'convert', '-f', 'raw', '-O',
                           'qcow2', src, q])
            self.run_tool(['qemu-img', 'resize', '-f', 'qcow2', q,
                           str(a.qcow2_size)])
            return {'qcow2': q}
        if scen.name == 'bitmaps':
            src = self.random_source(a.qcow2_data)
            q = self.path('bitmaps-plain.qcow2')
            log('creating %s qcow2 with %s allocated, and a copy with two '
                'bitmaps' % (fmt_size(a.qcow2_size), fmt_size(a.qcow2_data)))
            self.run_tool(['qemu-img', 'convert', '-f', 'raw', '-O',
                           'qcow2', src, q])
            self.run_tool(['qemu-img', 'resize', '-f', 'qcow2', q,
                           str(a.qcow2_size)])
            b = self.path('bitmaps-two.qcow2')
            self.copy(q, b)
            for name, gran in (('b64k', '65536'), ('b4k', '4096')):
                self.run_tool(['qemu-img', 'bitmap', '--add', '-g', gran, b,
                               name])
            return {'plain': q, 'bitmaps': b}
        raise AssertionError(scen.name)

    def release_scenario(self):
        """Delete the scenario's images; random sources stay for reuse."""
        keep = set(self.random_sources.values())
        for d in (self.tmp, self.disk_tmp):
            if not d:
                continue
            for name in os.listdir(d):
                p = os.path.join(d, name)
                if name.endswith(('.raw', '.qcow2', '.vhdx')) and \
                        p not in keep:
                    os.unlink(p)

    # ---- servers --------------------------------------------------------

    def server_missing(self, srv):
        """Why srv cannot run here, or None."""
        if srv.program == 'diskserve':
            binary = self.diskserve_binary(srv)
            if not os.access(binary, os.X_OK):
                return 'no diskserve binary at %s' % binary
            return None
        prog = {'nbdkit-file': 'nbdkit', 'nbdkit-null': 'nbdkit',
                'qemu-nbd': 'qemu-nbd'}[srv.program]
        if not shutil.which(prog):
            return '%s not installed' % prog
        return None

    def diskserve_binary(self, srv):
        return self.args.baseline if srv.baseline else self.args.diskserve

    def server_argv(self, srv, image, sock, read_only):
        a = self.args
        ro = ['-r'] if read_only else []
        if srv.program == 'diskserve':
            argv = [self.diskserve_binary(srv), '-k', sock, '-f',
                    srv.fmt] + ro
            if a.threads:
                argv += ['--threads', str(a.threads)]
            return (argv + srv.args + shlex.split(a.diskserve_args) +
                    [image])
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
                '--time_based', '--runtime=%g' % self.runtime,
                '--ramp_time=%g' % a.ramp,
                '--norandommap', '--randrepeat=0',
                '--output-format=json', '--output=' + json_path]
        if job.limit == 'data':
            argv.append('--size=%d' % a.qcow2_data)
        if job.writes:
            argv.append('--end_fsync=1')
        if job.writer:
            # A second job of the same fio process, so a second connection:
            # options after --name belong to this job alone, and none of
            # the first job's are inherited.
            argv += ['--name=writer', '--ioengine=nbd',
                     '--uri=nbd+unix:///?socket=' + sock,
                     '--rw=randwrite', '--bs=4k', '--iodepth=1',
                     '--fsync=1', '--size=%d' % a.qcow2_data,
                     '--time_based', '--runtime=%g' % self.runtime,
                     '--ramp_time=%g' % a.ramp,
                     '--norandommap', '--randrepeat=0']
        return argv

    def run_fio(self, job, sock, server, tag):
        """Run fio against sock; returns the measurement dict."""
        json_path = self.path('fio.json')
        if os.path.exists(json_path):
            os.unlink(json_path)
        fio_log = self.path('fio.log')
        with open(fio_log, 'w'):
            pass
        counter = None
        if self.syscall_events:
            # A failure of perf costs this run its system call count only.
            try:
                counter = SyscallCount(self, server.pid, self.syscall_events)
            except RunError as e:
                log('warning: no system call count for %s: %s' % (tag, e))
        try:
            return self.run_fio_window(job, sock, server, tag, json_path,
                                       fio_log, counter)
        finally:
            if counter:
                counter.close()

    def run_fio_window(self, job, sock, server, tag, json_path, fio_log,
                       counter):
        a = self.args
        fio = self.spawn(self.fio_argv(job, sock, json_path), fio_log)
        t0 = time.monotonic()
        # fio's ramp starts when its job has connected, not when fio
        # starts: until then the window's start is a guess.
        ramp_end = t0 + a.ramp
        started = False
        deadline = ramp_end + self.runtime + 120
        srv0 = fio0 = None
        timed_out = False
        # Poll rather than block so that the CPU window can start when
        # fio's ramp ends, like its statistics, and a hung run is caught.
        while True:
            pid, status, ru = os.wait4(fio.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if not started and srv0 is None:
                started = fio_job_connected(fio.pid)
                if started:
                    ramp_end = now + a.ramp
                    deadline = ramp_end + self.runtime + 120
                elif started is None:
                    started = True      # no way to tell: keep the guess
            if srv0 is None and now >= ramp_end:
                srv0 = proc_tree_ticks(server.pid)
                fio0 = proc_tree_ticks(fio.pid)
                mach0, win0 = machine_busy_ticks(), now
                if counter:
                    try:
                        counter.enable()
                    except RunError as e:
                        log('warning: no system call count for %s: %s'
                            % (tag, e))
                        counter = None
            if now > deadline and not timed_out:
                timed_out = True
                fio.kill()
            if srv0 is not None:
                time.sleep(0.05)
            elif not started:
                time.sleep(0.002)
            else:
                time.sleep(min(0.05, max(0.001, ramp_end - now)))
        srv1 = proc_tree_ticks(server.pid)
        mach1, win1 = machine_busy_ticks(), time.monotonic()
        fio.returncode = os.waitstatus_to_exitcode(status)
        self.live.discard(fio)
        counts = None
        if counter and srv0 is not None:
            try:
                counter.disable()
                counts = counter.finish()
            except (RunError, OSError) as e:
                log('warning: no system call count for %s: %s' % (tag, e))
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
        for j in data['jobs']:
            if j.get('error'):
                raise RunError('fio job %s error %s: %s'
                               % (j.get('jobname'), j['error'],
                                  self.tail(fio_log)))
        j = data['jobs'][0]
        ios = sum(j[d]['total_ios'] for d in ('read', 'write'))
        iops = sum(j[d]['iops'] for d in ('read', 'write'))
        bw = sum(j[d]['bw_bytes'] for d in ('read', 'write'))
        if ios == 0:
            raise RunError('fio completed no requests')
        m = {'iops': iops, 'mibs': bw / MiB}
        if j['read']['total_ios']:
            pct = j['read']['clat_ns'].get('percentile', {})
            if '99.000000' in pct:
                m['p99'] = pct['99.000000'] / 1000.0
        if job.writer:
            w = [x for x in data['jobs'] if x.get('jobname') == 'writer']
            if len(w) != 1:
                raise RunError('no writer job in fio results')
            w = w[0]
            m['w_iops'] = w['write']['iops']
            m['w_writes'] = w['write']['total_ios']
            m['w_flushes'] = w.get('sync', {}).get('total_ios', 0)
            if m['w_writes'] == 0:
                raise RunError('the writer completed no writes')
            if m['w_flushes'] < m['w_writes'] - 1:
                raise RunError('the writer sent %d flushes for %d writes'
                               % (m['w_flushes'], m['w_writes']))
            # CPU per request counts every request the server answered.
            ios += m['w_writes'] + m['w_flushes']
        srv_cpu = (srv1 - srv0) / CLK_TCK
        m.update({'ios': ios, 'srv_cpu': srv_cpu,
                  'srv_us': srv_cpu / ios * 1e6})
        if fio0 is not None:
            fio_cpu = ru.ru_utime + ru.ru_stime - fio0 / CLK_TCK
            m['fio_us'] = max(0.0, fio_cpu) / ios * 1e6
            # CPUs busy with anything but this server and fio: other load
            # on the machine, which takes CPU from both.
            others = (mach1 - mach0) / CLK_TCK - srv_cpu - max(0.0, fio_cpu)
            m['others'] = max(0.0, others) / max(1e-3, win1 - win0)
        if counts:
            total = counts.pop(TOTAL_EVENT)
            m['sys'] = total / ios
            per = {e.split('sys_enter_', 1)[1]: n / ios
                   for e, n in counts.items() if 'sys_enter_' in e}
            if per:
                per['other'] = max(0, total - sum(counts.values())) / ios
            m['sys_by'] = per
        return m

    def check_image(self, img, fmt='qcow2'):
        """Run qemu-img check; returns (verdict word, summary line)."""
        r = subprocess.run(['qemu-img', 'check', '-f', fmt, img],
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
        if scen.check and (job.writes or job.writer):
            m['check'], m['check_text'] = self.check_image(image, srv.fmt)
        return m

    # ---- scenario loop --------------------------------------------------

    def jobs_of(self, scen):
        want = self.args.selected.get(scen.name)
        return [j for j in scen.jobs if not want or j.name in want]

    def servers_of(self, scen):
        """The scenario's servers (with --baseline, each of BASELINE_OF
        followed by its baseline twin), less those -s leaves out."""
        want = self.args.servers
        out = []
        for s in scen.servers:
            out.append(s)
            if self.args.baseline and s.label in BASELINE_OF:
                out.append(s.as_baseline())
        return [s for s in out if not want or s.label in want]

    def runtime_of(self, scen):
        if self.args.runtime_given or not scen.runtime:
            return self.args.runtime
        return scen.runtime

    def run_scenario(self, scen):
        jobs, servers = self.jobs_of(scen), self.servers_of(scen)
        if not jobs or not servers:
            return
        self.runtime = self.runtime_of(scen)
        self.emit('## scenario %s: %s' % (scen.name, scen.desc))
        if scen.on_disk:
            self.emit('# images in %s (%s)'
                      % (self.disk_tmp, fs_type(self.disk_tmp)))
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
                dst = self.image_path(scen, '%s-%s.%s'
                                      % (scen.name, s.label, s.fmt))
                last = i == len(group) - 1
                if last and bases[kind] not in self.random_sources.values():
                    os.rename(bases[kind], dst)  # saves one copy's memory
                else:
                    self.copy(bases[kind], dst)
                if scen.on_disk:
                    self.settle(dst)
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
        rounds = range(1, self.args.rounds + 1)
        if scen.interleave_jobs:
            order = [(job, rnd) for rnd in rounds for job in jobs]
        else:
            order = [(job, rnd) for job in jobs for rnd in rounds]
        allres = {job.name: {s.label: [] for s in servers} for job in jobs}
        for job, rnd in order:
            res = allres[job.name]
            for s in servers:
                if s.label in na:
                    continue
                warm = page = None
                fresh = scen.fresh(job, s)
                if fresh:
                    image = self.copy(bases[job.base or s.image_kind],
                                      self.path('run.%s' % s.fmt))
                    if not self.args.no_warm:
                        # what the image can grow to
                        warm = warm_memory(self.args.raw_size
                                           if scen.name == 'throughput'
                                           else self.args.qcow2_size)
                    page = fresh_page_us(self.tmp)
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
                    if 'others' in m:
                        msg += ', other load %.2f CPUs' % m['others']
                    if 'sys' in m:
                        msg += ', %.2f syscalls/req' % m['sys']
                    if page is not None:
                        m['page_us'] = page
                        msg += ', fresh page %.1f us' % page
                    if warm is not None:
                        msg += ' (warm-up %.1f us/page)' % warm
                    if scen.on_disk and 'p99' in m:
                        msg += ', read p99 %.0f us' % m['p99']
                    if 'w_iops' in m:
                        msg += ', writer %.0f IOPS (%d flushes)' % (
                            m['w_iops'], m['w_flushes'])
                    if 'check' in m:
                        msg += ', qemu-img check: %s' % m['check_text']
                    log(msg)
                finally:
                    if fresh and os.path.exists(image):
                        os.unlink(image)
                res[s.label].append(m)
            if rnd == self.args.rounds:
                if scen.name == 'qcow2-flush':
                    self.report_flush_job(scen, job, servers, res, na)
                else:
                    self.report_job(scen, job, servers, res, na)
        if scen.name == 'qcow2-flush':
            self.report_flush_targets(scen, jobs)
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
        p99 = [m['p99'] for m in ok if 'p99' in m]
        if p99:
            s['p99'] = statistics.median(p99)
        sys_ = [m['sys'] for m in ok if 'sys' in m]
        if sys_:
            s['sys'] = statistics.median(sys_)
            by = [m['sys_by'] for m in ok if m.get('sys_by')]
            if by:
                s['sys_by'] = {n: statistics.median(b.get(n, 0) for b in by)
                               for n in by[0]}
        w = [m['w_iops'] for m in ok if 'w_iops' in m]
        if w:
            s['w_iops'] = statistics.median(w)
            s['w_writes'] = sum(m['w_writes'] for m in ok)
            s['w_flushes'] = sum(m['w_flushes'] for m in ok)
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
                  % (scen.name, job.name, job.desc, conns, self.runtime,
                     a.ramp, a.rounds))
        summ = {label: self.summarize(runs) for label, runs in res.items()}
        ref = summ.get(REFERENCE)
        rounds = ['round %d' % (i + 1) for i in range(a.rounds)]
        # the label column fits the longest label (diskserve-qcow2-base)
        w = max([14] + [len(s.label) + 1 for s in servers])
        head = '%-*s' % (w, 'server') + ''.join('%10s' % r for r in rounds)
        head += '%10s%9s%13s%12s%12s' % ('median', 'MiB/s', 'diskserve/x',
                                         'srv us/req', 'fio us/req')
        if self.syscall_events:
            head += '%9s' % 'sys/req'
        if scen.check:
            head += '  qemu-img check'
        self.emit(head)
        for s in servers:
            label = s.label
            line = '%-*s' % (w, label)
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
            if self.syscall_events:
                line += '%9s' % ('%.2f' % su['sys'] if 'sys' in su else '-')
            if 'check' in su:
                line += '  %s (%s ok)' % (su['check'], su['check_n'])
            self.emit(line)
        # What the machine did to each round: the CPU cost of a write into
        # a new tmpfs page just before it, and the CPUs other processes
        # took during it.  Slow rounds with a high first or second number
        # were slowed by the machine, not by the server.
        for key, what, fmt in (('page_us', 'fresh tmpfs page us', '%.1f'),
                               ('others', 'other load CPUs', '%.2f')):
            for label, runs in res.items():
                vals = [fmt % m[key] if key in m else '-' for m in runs]
                if any(v != '-' for v in vals):
                    self.emit('  %-*s %-20s %s'
                              % (max([12] + [len(x) for x in res]), label,
                                 what, ' '.join(vals)))
        self.emit_syscalls(servers, summ)
        self.emit_failures(res)
        for s in servers:
            self.emit(self.result_line(scen, job, s.label, res.get(s.label),
                                       summ.get(s.label), ref,
                                       na.get(s.label)))
        self.results.setdefault(scen.name, {})[job.name] = summ

    @staticmethod
    def top_syscalls(su, n=3):
        """The n system calls made most often per request (medians over the
        rounds), then the rest of the total as 'other'."""
        by = dict(su.get('sys_by') or {})
        by.pop('other', None)
        top = sorted(by.items(), key=lambda kv: -kv[1])[:n]
        top = [(k, v) for k, v in top if v >= 0.005]
        rest = su['sys'] - sum(v for _, v in top)
        if rest >= 0.005:
            top.append(('other', rest))
        return top

    def emit_syscalls(self, servers, summ):
        """Under the table: diskserve's most frequent system calls."""
        for s in servers:
            su = summ.get(s.label)
            if not s.is_diskserve or not su or not su.get('sys_by'):
                continue
            self.emit('  %s: %s per request' % (s.label, ', '.join(
                '%.2f %s' % (v, k) for k, v in self.top_syscalls(su))))

    def result_line(self, scen, job, label, runs, su, ref, why, extra=()):
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
            for key, name, fmt in (('page_us', 'page_us_rounds', '%.1f'),
                                   ('others', 'other_cpus_rounds', '%.2f')):
                if any(key in m for m in runs):
                    fields.append((name, ','.join(
                        fmt % m[key] if key in m else '-' for m in runs)))
            if self.syscall_events:
                fields.append(('syscalls_per_req', '%.3f' % su['sys']
                               if 'sys' in su else 'n/a'))
                if su.get('sys_by'):
                    fields.append(('syscalls_top', ','.join(
                        '%s:%.3f' % kv for kv in self.top_syscalls(su))))
            fields += list(extra)
            if 'check' in su:
                fields.append(('check', su['check']))
        return 'RESULT ' + ' '.join('%s=%s' % (k, shlex.quote(str(v)))
                                    for k, v in fields)

    def report_flush_job(self, scen, job, servers, res, na):
        """qcow2-flush: reader IOPS, reader p99 and (beside the writer) the
        writer's IOPS, per server and round."""
        a = self.args
        self.emit()
        self.emit('### %s / %s: %s, %g s (+%g s ramp) x %d rounds'
                  % (scen.name, job.name, job.desc, self.runtime, a.ramp,
                     a.rounds))
        summ = {label: self.summarize(runs) for label, runs in res.items()}
        ref = summ.get(REFERENCE)
        rounds = ''.join('%10s' % ('round %d' % (i + 1))
                         for i in range(a.rounds))
        w = max([14] + [len(s.label) + 1 for s in servers])

        def section(title, key, fmt, tail_head, tail):
            self.emit('%-*s' % (w, title) + rounds + '%10s' % 'median'
                      + tail_head)
            for s in servers:
                label = s.label
                line = '%-*s' % (w, label)
                if label in na:
                    self.emit(line + 'n/a: ' + na[label])
                    continue
                for m in res[label]:
                    line += '%10s' % ('FAILED' if 'error' in m
                                      else fmt % m[key] if key in m
                                      else '-')
                line += ' ' * 10 * (a.rounds - len(res[label]))
                su = summ[label]
                if su is None:
                    self.emit(line + '  all rounds failed')
                    continue
                self.emit(line + '%10s' % (fmt % su[key] if key in su
                                           else '-') + tail(su))

        def ratio(su):
            return '%.2f' % (ref['iops'] / su['iops']) if ref else 'n/a'

        sys_head = '%9s' % 'sys/req' if self.syscall_events else ''

        def sys_col(su):
            if not self.syscall_events:
                return ''
            return '%9s' % ('%.2f' % su['sys'] if 'sys' in su else '-')

        section('reader IOPS', 'iops', '%.0f',
                '%9s%13s%12s%12s' % ('MiB/s', 'diskserve/x', 'srv us/req',
                                     'fio us/req') + sys_head,
                lambda su: '%9.1f%13s%12.2f%12s' % (
                    su['mibs'], ratio(su), su['srv_us'],
                    '%.2f' % su['fio_us'] if 'fio_us' in su else '-')
                + sys_col(su))
        section('reader p99 us', 'p99', '%.0f', '', lambda su: '')
        if job.writer:
            section('writer IOPS', 'w_iops', '%.0f',
                    '%10s%10s  %s' % ('writes', 'flushes', 'qemu-img check'),
                    lambda su: '%10d%10d  %s' % (
                        su['w_writes'], su['w_flushes'],
                        '%s (%s ok)' % (su['check'], su['check_n'])
                        if 'check' in su else '-'))
        self.emit_syscalls(servers, summ)
        self.emit_failures(res)
        for s in servers:
            su, runs = summ.get(s.label), res.get(s.label) or []
            extra = []
            if su:
                def rounds_of(key):
                    return ','.join('%.0f' % m[key] if key in m else 'fail'
                                    for m in runs)
                extra = [('p99_us', '%.0f' % su['p99'] if 'p99' in su
                          else 'n/a'),
                         ('p99_us_rounds', rounds_of('p99'))]
                if job.writer:
                    extra += [('writer_iops', '%.0f' % su['w_iops']),
                              ('writer_iops_rounds', rounds_of('w_iops')),
                              ('writer_writes', su['w_writes']),
                              ('writer_flushes', su['w_flushes'])]
            self.emit(self.result_line(scen, job, s.label, runs, su, ref,
                                       na.get(s.label), extra))
        self.results.setdefault(scen.name, {})[job.name] = (summ, res)

    def report_flush_targets(self, scen, jobs):
        """The issue's two targets for diskserve in qcow2-flush: reader p99
        beside the flushing writer at most 2x its own p99 alone, and reader
        IOPS beside the writer at least 3x qemu-nbd's."""
        got = self.results.get(scen.name, {})
        alone = got.get('randread-alone')
        beside = got.get('randread-beside-flushing-writer')
        if not beside:
            return

        def med(pair, label, key):
            su = pair[0].get(label) if pair else None
            return su.get(key) if su else None

        def per_round(pair_a, label_a, pair_b, label_b, key):
            ra = pair_a[1].get(label_a, []) if pair_a else []
            rb = pair_b[1].get(label_b, []) if pair_b else []
            out = []
            for x, y in zip(ra, rb):
                out.append('%.2f' % (x[key] / y[key])
                           if key in x and y.get(key) else 'fail')
            return ','.join(out) or 'n/a'

        def verdict(r, limit, at_most):
            if r is None:
                return 'n/a'
            return 'met' if (r <= limit if at_most else r >= limit) \
                else 'not met'

        self.emit()
        self.emit('### %s targets for diskserve (medians; per round in '
                  'brackets)' % scen.name)
        rows, fields = [], [('scenario', scen.name), ('job', 'targets'),
                            ('server', REFERENCE)]
        pb = med(beside, REFERENCE, 'p99')
        pa = med(alone, REFERENCE, 'p99')
        r1 = pb / pa if pb is not None and pa else None
        rr1 = per_round(beside, REFERENCE, alone, REFERENCE, 'p99')
        rows.append('reader p99 beside writer / alone:       %s / %s us = %s'
                    '  [%s]  target <= 2: %s' % (
                        '%.0f' % pb if pb is not None else 'n/a',
                        '%.0f' % pa if pa is not None else 'n/a',
                        '%.2f' % r1 if r1 is not None else 'n/a', rr1,
                        verdict(r1, 2, True)))
        ib = med(beside, REFERENCE, 'iops')
        iq = med(beside, 'qemu-nbd', 'iops')
        r2 = ib / iq if ib is not None and iq else None
        rr2 = per_round(beside, REFERENCE, beside, 'qemu-nbd', 'iops')
        rows.append('reader IOPS beside writer, vs qemu-nbd: %s / %s = %s'
                    '  [%s]  target >= 3: %s' % (
                        '%.0f' % ib if ib is not None else 'n/a',
                        '%.0f' % iq if iq is not None else 'n/a',
                        '%.2f' % r2 if r2 is not None else 'n/a', rr2,
                        verdict(r2, 3, False)))
        for row in rows:
            self.emit(row)
        fields += [('p99_ratio', '%.3f' % r1 if r1 is not None else 'n/a'),
                   ('p99_ratio_rounds', rr1), ('p99_ratio_target', '<=2'),
                   ('p99_target', verdict(r1, 2, True)),
                   ('iops_ratio_vs_qemu_nbd',
                    '%.3f' % r2 if r2 is not None else 'n/a'),
                   ('iops_ratio_rounds', rr2),
                   ('iops_ratio_target', '>=3'),
                   ('iops_target', verdict(r2, 3, False))]
        self.emit('RESULT ' + ' '.join('%s=%s' % (k, shlex.quote(str(v)))
                                       for k, v in fields))

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
                ('source', rev),
                ('syscalls', 'perf' if self.syscall_events else 'off'),
                ('fio', tool_version(['fio', '--version'])),
                ('nbdkit', tool_version(['nbdkit', '--version'])),
                ('qemu_nbd', tool_version(['qemu-nbd', '--version']))]
        if a.baseline:
            info.insert(info.index(('source', rev)),
                        ('baseline', a.baseline))
        if self.disk_tmp:
            info.insert(info.index(('diskserve', a.diskserve)),
                        ('disk_tmpdir', '%s(%s)' % (
                            a.disk_tmpdir, fs_type(self.disk_tmp))))
        if not a.runtime_given:
            # scenarios with a shorter run of their own
            for s in SCENARIOS:
                if s.name in a.selected and s.runtime:
                    info.insert(5, ('runtime_%s' % s.name, '%g' % s.runtime))
        self.emit('# diskserve side-by-side benchmark')
        self.emit('RUN ' + ' '.join('%s=%s' % (k, shlex.quote(str(v)))
                                    for k, v in info))

    def estimate(self, scens):
        runs = secs = 0
        for scen in scens:
            n = len(self.jobs_of(scen)) * len(self.servers_of(scen)) * \
                self.args.rounds
            runs += n
            secs += n * (self.runtime_of(scen) + self.args.ramp + 1)
        secs = int(secs)
        log('%d runs, at least %d min %02d s' % (runs, secs // 60, secs % 60))

    def main(self):
        a = self.args
        remove_stale_dirs(a.tmpdir)
        self.tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=a.tmpdir)
        with open(self.path('owner.pid'), 'w') as f:
            f.write('%d\n' % os.getpid())
        scens = [s for s in SCENARIOS if s.name in a.selected]
        if any(s.on_disk for s in scens):
            remove_stale_dirs(a.disk_tmpdir)
            self.disk_tmp = tempfile.mkdtemp(prefix=TMP_PREFIX,
                                             dir=a.disk_tmpdir)
            with open(self.disk_path('owner.pid'), 'w') as f:
                f.write('%d\n' % os.getpid())
            kind = fs_type(self.disk_tmp)
            if kind in ('tmpfs', 'ramfs'):
                log('warning: --disk-tmpdir %s is on %s: a flush costs '
                    'nothing there, which hides what qcow2-flush measures'
                    % (a.disk_tmpdir, kind))
        if a.syscalls:
            self.syscall_events, why = syscall_events()
            if why:
                log('warning: --syscalls: %s; no system call counts' % why)
        if a.output:
            self.out_file = open(a.output, 'w')
        if a.save:
            os.makedirs(a.save, exist_ok=True)
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
    p.add_argument('-t', '--runtime', type=float,
                   help='measured seconds per fio run (default %d; '
                   'throughput: 12)' % DEFAULT_RUNTIME)
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
    p.add_argument('--baseline', metavar='PATH',
                   help='another diskserve binary (an older build) run with '
                   'the same arguments as rows diskserve-base and '
                   'diskserve-qcow2-base, interleaved with the others')
    p.add_argument('--syscalls', action='store_true',
                   help='count the system calls each server makes per '
                   'request (perf stat; costs the server some CPU)')
    p.add_argument('--tmpdir', default='/dev/shm',
                   help='where images and sockets go (default /dev/shm)')
    p.add_argument('--disk-tmpdir', default='/var/tmp',
                   help='where qcow2-flush keeps its images: a real file '
                   'system, not tmpfs (default /var/tmp)')
    p.add_argument('--no-warm', action='store_true',
                   help='do not fault in and free --qcow2-size bytes of '
                   'memory before each run on a fresh image')
    p.add_argument('-l', '--list', action='store_true',
                   help='list scenarios, jobs and servers, then exit')
    p.add_argument('-v', '--verbose', action='store_true',
                   help='print every command run')
    a = p.parse_intermixed_args(argv)
    a.runtime_given = a.runtime is not None
    if not a.runtime_given:
        a.runtime = DEFAULT_RUNTIME

    if a.list:
        for s in SCENARIOS:
            print('%s: %s' % (s.name, s.desc))
            print('  servers: %s' % ', '.join(x.label for x in s.servers))
            if s.runtime:
                print('  runs of %g s unless -t is given' % s.runtime)
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
    if a.baseline:
        a.baseline = os.path.abspath(a.baseline)
        if not os.access(a.baseline, os.X_OK):
            p.error('--baseline %s: not an executable' % a.baseline)
    if a.servers:
        a.servers = set(a.servers.split(','))
        known = {x.label for s in SCENARIOS for x in s.servers}
        if a.baseline:
            known |= {x + BASELINE_SUFFIX for x in BASELINE_OF}
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
