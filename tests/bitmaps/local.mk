# tests/bitmaps: qcow2 persistent dirty bitmaps through the driver (load,
# tracking, store, management), with qemu-img, qemu-io and qemu-nbd plus
# nbdinfo as the oracles, and malformed directories made by a poke
# script.

EXTRA_DIST += tests/bitmaps/bitmaps-functions.sh tests/bitmaps/bmpoke.py \
	tests/bitmaps/uncovered.py

check_PROGRAMS += tests/bitmaps/bitmap-probe
tests_bitmaps_bitmap_probe_SOURCES = tests/bitmaps/bitmap-probe.c
tests_bitmaps_bitmap_probe_LDADD = $(FORMATS_LIBS)

check_PROGRAMS += tests/bitmaps/bitmaps-apply-is-atomic-with-writes
TESTS += tests/bitmaps/bitmaps-apply-is-atomic-with-writes
tests_bitmaps_bitmaps_apply_is_atomic_with_writes_SOURCES = \
	tests/bitmaps/bitmaps-apply-is-atomic-with-writes.c
tests_bitmaps_bitmaps_apply_is_atomic_with_writes_LDADD = $(FORMATS_LIBS)

BITMAPS_TESTS = \
	tests/bitmaps/bitmaps-load-matches-qemu-nbd.sh \
	tests/bitmaps/bitmaps-malformed-dropped-read-only-refused-read-write.sh \
	tests/bitmaps/bitmaps-writes-land-in-enabled-bitmaps-and-store-as-qemu-would.sh \
	tests/bitmaps/bitmaps-img-bitmap-matches-qemu-img-bitmap.sh \
	tests/bitmaps/bitmaps-plain-mode-in-use-while-open-disabled-survive-crash.sh \
	tests/bitmaps/bitmaps-crash-safe-cover-every-write-after-kill-9.sh \
	tests/bitmaps/bitmaps-work-on-backed-and-raw-data-file-images.sh \
	tests/bitmaps/bitmaps-survive-crash-states.sh
TESTS += $(BITMAPS_TESTS)
EXTRA_DIST += $(BITMAPS_TESTS)
