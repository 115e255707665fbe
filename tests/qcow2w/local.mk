# tests/qcow2w: the qcow2 write path under load.  Two libnbd clients
# (qcow2w-random, qcow2w-overlap) drive a live server with many requests
# in flight on several connections and keep a shadow of the disk; the
# shell tests build the images, serve them and have qemu-img check and
# compare judge the result.  DS_TEST_SERVER=qemu-nbd runs the same tests
# against qemu-nbd.

if HAVE_TESTS

QCOW2W_AIO = tests/qcow2w/qcow2w-aio.c tests/qcow2w/qcow2w-aio.h

check_PROGRAMS += tests/qcow2w/qcow2w-random tests/qcow2w/qcow2w-overlap

tests_qcow2w_qcow2w_random_SOURCES = tests/qcow2w/qcow2w-random.c \
	$(QCOW2W_AIO)
tests_qcow2w_qcow2w_random_CFLAGS = $(TESTS_LIBNBD_CFLAGS)
tests_qcow2w_qcow2w_random_LDADD = $(TESTS_LIBNBD_LIBS)

tests_qcow2w_qcow2w_overlap_SOURCES = tests/qcow2w/qcow2w-overlap.c \
	$(QCOW2W_AIO)
tests_qcow2w_qcow2w_overlap_CFLAGS = $(TESTS_LIBNBD_CFLAGS)
tests_qcow2w_qcow2w_overlap_LDADD = $(TESTS_LIBNBD_LIBS)

QCOW2W_TESTS = \
	tests/qcow2w/qcow2w-random-64k-clusters-match-shadow.sh \
	tests/qcow2w/qcow2w-random-4k-clusters-match-shadow.sh \
	tests/qcow2w/qcow2w-random-subclusters-match-shadow.sh \
	tests/qcow2w/qcow2w-random-lazy-refcounts-match-shadow.sh \
	tests/qcow2w/qcow2w-random-backing-overlay-matches-shadow.sh \
	tests/qcow2w/qcow2w-random-compressed-base-matches-shadow.sh \
	tests/qcow2w/qcow2w-random-luks-matches-shadow.sh \
	tests/qcow2w/qcow2w-overlapping-writes-keep-one-value.sh \
	tests/qcow2w/qcow2w-faults-fail-requests-not-server.sh

TESTS += $(QCOW2W_TESTS)
EXTRA_DIST += $(QCOW2W_TESTS) \
	tests/qcow2w/qcow2w-functions.sh \
	tests/qcow2w/qcow2w-random.sh \
	tests/qcow2w/qcow2w-faults.py

endif
