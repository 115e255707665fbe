# Test suite: each area's fragment adds to TESTS and check_PROGRAMS.
EXTRA_DIST += tests/functions.sh
TESTS_LIBNBD_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
TESTS_LIBNBD_LIBS = $(LIBNBD_LIBS)

include tests/unit/local.mk
include tests/protocol/local.mk
include tests/server/local.mk
include tests/integration/local.mk
include tests/interop/local.mk
include tests/qcow2/local.mk
include tests/qcow2w/local.mk
include tests/vm/local.mk
include tests/crash/local.mk
include tests/img/local.mk
include tests/vhdx/local.mk
include tests/fuzz/local.mk
include tests/tls/local.mk
include tests/bitmaps/local.mk
include tests/bitmaps-server/local.mk
include tests/rbd/local.mk
