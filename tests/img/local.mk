# tests/img: diskserve-img (create, info, map, check and repair) against
# qemu-img as the oracle, on images the tests build and break.

EXTRA_DIST += tests/img/img-functions.sh tests/img/imgpoke.py \
	tests/img/imgcmp.py

# qcow2_check_image on an image opened through img_open.
check_PROGRAMS += tests/img/img-check-open
tests_img_img_check_open_SOURCES = tests/img/img-check-open.c
tests_img_img_check_open_LDADD = $(FORMATS_LIBS)

IMG_TESTS = \
	tests/img/img-create-passes-qemu-check.sh \
	tests/img/img-check-agrees-with-qemu-on-clean-images.sh \
	tests/img/img-check-agrees-with-qemu-on-injected-faults.sh \
	tests/img/img-info-matches-qemu.sh \
	tests/img/img-map-matches-qemu.sh \
	tests/img/img-rejects-bad-usage-with-exit-2.sh \
	tests/img/img-repair-rebuilds-broken-refcount-structures.sh \
	tests/img/img-repair-survives-crash-states.sh \
	tests/img/img-check-repairs-an-open-image.sh \
	tests/img/img-check-rejects-overlong-bitmap-entry-in-bounds.sh \
	tests/img/img-repair-counts-references-its-new-structures-cover.sh \
	tests/img/img-repair-does-not-grow-file-to-cover-references-past-eof.sh \
	tests/img/img-repair-never-writes-over-the-header.sh
TESTS += $(IMG_TESTS)
EXTRA_DIST += $(IMG_TESTS)
