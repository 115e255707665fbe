"""The side-by-side benchmark's scenarios: which servers serve which image
to which fio jobs (bench/side_by_side.py runs them), and the constants
they share."""

import os

CLK_TCK = os.sysconf('SC_CLK_TCK')
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
REFERENCE = 'diskserve'
# --baseline: these rows are run a second time from the other binary, under
# their label with this suffix.
BASELINE_OF = ('diskserve', 'diskserve-qcow2')
BASELINE_SUFFIX = '-base'
DEFAULT_RUNTIME = 20
TMP_PREFIX = 'diskserve-bench.'


class Job:
    """One fio workload: access pattern, block size, queue depth, range."""

    def __init__(self, name, rw, bs, iodepth, numjobs=1, limit=None,
                 base=None, desc='', writer=False):
        self.name = name
        self.rw = rw
        self.bs = bs
        self.iodepth = iodepth
        self.numjobs = numjobs
        self.limit = limit      # 'data' restricts fio to the allocated part
        # Which fresh image to copy for each run: for every server in a
        # fresh_per_run scenario, else for the servers whose format is in
        # the scenario's fresh_formats.
        self.base = base
        self.desc = desc
        # qcow2-flush: a second fio job in the same run, on its own
        # connection, writes 4k at random offsets in the same range with a
        # flush after every write (fsync=1 makes fio send NBD_CMD_FLUSH), QD1.
        self.writer = writer

    @property
    def writes(self):
        return 'write' in self.rw

    @property
    def sequential(self):
        return not self.rw.startswith('rand')


class Server:
    """One server process kind in a scenario, with the image it serves."""

    def __init__(self, label, program, fmt, image_kind, args=(),
                 baseline=False):
        self.label = label      # name in the tables
        self.program = program  # diskserve, nbdkit-file, nbdkit-null, ...
        self.fmt = fmt          # raw or qcow2 (None for nbdkit-null)
        self.image_kind = image_kind  # key into the scenario's images
        self.args = list(args)  # extra command line arguments
        self.baseline = baseline  # runs the --baseline diskserve binary

    def as_baseline(self):
        """The same server run from the --baseline binary."""
        return Server(self.label + BASELINE_SUFFIX, self.program, self.fmt,
                      self.image_kind, self.args, baseline=True)

    @property
    def is_diskserve(self):
        return self.program == 'diskserve'


class Scenario:
    def __init__(self, name, desc, servers, jobs, fresh_per_run=False,
                 check=False, read_only=False, on_disk=False,
                 interleave_jobs=False, fresh_formats=(), runtime=None):
        self.name = name
        self.read_only = read_only  # every server exports read-only
        self.desc = desc
        self.servers = servers
        self.jobs = jobs
        self.fresh_per_run = fresh_per_run
        self.check = check
        # Images in --disk-tmpdir (a real file system) instead of --tmpdir.
        self.on_disk = on_disk
        # Rounds outermost: every job of every server runs in each round,
        # so that jobs compared with each other see the same drift.
        self.interleave_jobs = interleave_jobs
        # A fresh copy of the job's base image per run, for the servers of
        # these formats only (the others keep their copy all along).
        self.fresh_formats = fresh_formats
        # Seconds per run when -t is not given (None: the global default).
        self.runtime = runtime

    def fresh(self, job, srv):
        """Whether srv gets a fresh copy of an image for each run of job."""
        return self.fresh_per_run or (job.base is not None and
                                      srv.fmt in self.fresh_formats)


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
        'throughput', 'large sequential and small random requests on raw '
        'and on a fully allocated qcow2 holding the same bytes (seqwrite: '
        'an empty qcow2, a fresh copy per run)',
        [Server('diskserve', 'diskserve', 'raw', 'raw'),
         Server('diskserve-qcow2', 'diskserve', 'qcow2', 'qcow2'),
         Server('nbdkit-file', 'nbdkit-file', 'raw', 'raw'),
         Server('nbdkit-null', 'nbdkit-null', None, None),
         Server('qemu-nbd', 'qemu-nbd', 'raw', 'raw')],
        [Job('seqread', 'read', '1M', 8,
             desc='1M sequential read, QD8'),
         Job('seqwrite', 'write', '1M', 8, base='empty',
             desc='1M sequential write, QD8 (qcow2: empty image)'),
         Job('randread', 'randread', '4k', 32,
             desc='4k random read, QD32'),
         Job('randwrite', 'randwrite', '4k', 32,
             desc='4k random write, QD32')],
        fresh_formats=('qcow2',), runtime=12),
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
    Scenario(
        'qcow2-flush', 'reads beside a flushing writer; qcow2 with its '
        'first part allocated, on a real file system (--disk-tmpdir)',
        [Server('diskserve', 'diskserve', 'qcow2', 'qcow2'),
         Server('qemu-nbd', 'qemu-nbd', 'qcow2', 'qcow2')],
        [Job('randread-alone', 'randread', '4k', 32, limit='data',
             desc='4k random read, QD32, allocated range'),
         Job('randread-beside-flushing-writer', 'randread', '4k', 32,
             limit='data', writer=True,
             desc='4k random read, QD32, allocated range, beside a 4k '
             'random writer (allocated range) flushing after every '
             'write, QD1')],
        check=True, on_disk=True, interleave_jobs=True),
    Scenario(
        'bitmaps', 'the cost of recording writes in dirty bitmaps: the '
        'allocated qcow2 of qcow2-write with no bitmap, and a copy with '
        'two enabled persistent bitmaps (64 KiB and 4 KiB granularity); '
        'a fresh copy per run, so every run starts with clean bitmaps',
        [Server('diskserve', 'diskserve', 'qcow2', 'plain'),
         Server('diskserve-bitmaps', 'diskserve', 'qcow2', 'bitmaps'),
         Server('diskserve-bitmaps-crash-safe', 'diskserve', 'qcow2',
                'bitmaps', ['--bitmaps-crash-safe']),
         Server('qemu-nbd-bitmaps', 'qemu-nbd', 'qcow2', 'bitmaps')],
        [Job('randwrite-allocated', 'randwrite', '4k', 32, limit='data',
             desc='4k random write, QD32, allocated range')],
        fresh_per_run=True, check=True),
    Scenario(
        'vhdx', 'dynamic VHDX writes and reads; a fresh image copy per run, '
        'checked with qemu-img check afterwards',
        [Server('diskserve', 'diskserve', 'vhdx', 'vhdx'),
         Server('qemu-nbd', 'qemu-nbd', 'vhdx', 'vhdx')],
        [Job('randread', 'randread', '4k', 32, limit='data', base='filled',
             desc='4k random read, QD32, fully allocated (32 MiB blocks)'),
         Job('randwrite-allocated', 'randwrite', '4k', 32, limit='data',
             base='filled',
             desc='4k random write, QD32, fully allocated (32 MiB blocks)'),
         Job('randwrite-allocating', 'randwrite', '4k', 32, base='empty',
             desc='4k random write, QD32, empty image (1 MiB blocks)'),
         Job('seqwrite-empty', 'write', '1M', 8, base='empty',
             desc='1M sequential write, QD8, empty image (1 MiB blocks)')],
        fresh_per_run=True, check=True),
]
