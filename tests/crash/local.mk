# tests/crash: crash-state replay of recorded workloads, and fault
# injection.  crash-check and crash-replay read the I/O log that
# DISKSERVE_IO_LOG makes the server write (formats/io.h); workload.py is
# the client whose requests they check; run-crash.sh ties them together
# for one format, image and seed.  See tests/crash/README.md.

if HAVE_TESTS

CRASH_LIB = tests/crash/crashlog.c tests/crash/crashlog.h

check_PROGRAMS += tests/crash/crash-check tests/crash/crash-replay \
	tests/crash/io-log-writer

tests_crash_crash_check_SOURCES = tests/crash/crash-check.c $(CRASH_LIB)
tests_crash_crash_check_CFLAGS = $(TESTS_LIBNBD_CFLAGS)
tests_crash_crash_check_LDADD = $(TESTS_LIBNBD_LIBS)

tests_crash_crash_replay_SOURCES = tests/crash/crash-replay.c $(CRASH_LIB)

# Links io.c, so it opens DISKSERVE_IO_LOG: only the test runs it.
tests_crash_io_log_writer_SOURCES = tests/crash/io-log-writer.c
tests_crash_io_log_writer_LDADD = libdsformats.a

CRASH_TESTS = \
	tests/crash/io-log-replays-every-change.sh \
	tests/crash/raw-survives-crash-states.sh \
	tests/crash/checker-catches-lost-write.sh \
	tests/crash/faults-fail-requests-not-server.sh

TESTS += $(CRASH_TESTS)
EXTRA_DIST += $(CRASH_TESTS) \
	tests/crash/README.md \
	tests/crash/run-crash.sh \
	tests/crash/workload.py \
	tests/crash/faults.py

endif

# qcow2 workloads (512-byte and 1 KiB clusters: allocation, refcount
# table growth, new refcount blocks at every refcount width, trims and
# zero writes, overwritten compressed clusters), and each rule of the
# qcow2 write order broken on purpose, which must be caught.
if HAVE_TESTS
CRASH_QCOW2_TESTS = \
	tests/crash/qcow2-allocation-survives-crash-states.sh \
	tests/crash/qcow2-refcount-table-growth-survives-crash-states.sh \
	tests/crash/qcow2-refcount-block-creation-survives-crash-states.sh \
	tests/crash/qcow2-trims-and-zeros-survive-crash-states.sh \
	tests/crash/qcow2-compressed-overwrite-survives-crash-states.sh \
	tests/crash/qcow2-broken-write-order-fails-crash-check.sh
TESTS += $(CRASH_QCOW2_TESTS)
EXTRA_DIST += $(CRASH_QCOW2_TESTS)
endif

# VHDX workloads: allocation through the log with torn header, log and
# BAT writes; the replay after SIGKILL between log flush and apply; and
# the write order broken on purpose, which must be caught.
if HAVE_TESTS
CRASH_VHDX_TESTS = \
	tests/crash/vhdx-allocation-survives-crash-states.sh \
	tests/crash/vhdx-broken-write-order-fails-crash-check.sh \
	tests/crash/vhdx-differencing-writes-survive-crash-states.sh
TESTS += $(CRASH_VHDX_TESTS)
EXTRA_DIST += $(CRASH_VHDX_TESTS) tests/crash/vhdx-make-child.sh \
	tests/crash/broken-order-functions.sh
endif
