# tests/interop: independent NBD clients (nbdinfo, nbdcopy, qemu-img,
# qemu-io) against a live diskserve, each asserting exact results.

INTEROP_TESTS = \
	tests/interop/nbdinfo-reports-exact-map.sh \
	tests/interop/nbdcopy-round-trips-data.sh \
	tests/interop/qemu-img-converts-and-compares.sh \
	tests/interop/qemu-io-writes-land-in-file.sh

TESTS += $(INTEROP_TESTS)
EXTRA_DIST += $(INTEROP_TESTS) tests/interop/interop-functions.sh
