# tests/img: diskserve-img (create, info, map, check and repair) against
# qemu-img as the oracle, on images the tests build and break.

EXTRA_DIST += tests/img/img-functions.sh tests/img/imgpoke.py \
	tests/img/imgcmp.py

IMG_TESTS = \
	tests/img/img-create-passes-qemu-check.sh \
	tests/img/img-check-agrees-with-qemu-on-clean-images.sh \
	tests/img/img-check-agrees-with-qemu-on-injected-faults.sh \
	tests/img/img-info-matches-qemu.sh \
	tests/img/img-map-matches-qemu.sh \
	tests/img/img-rejects-bad-usage-with-exit-2.sh \
	tests/img/img-repair-rebuilds-broken-refcount-structures.sh \
	tests/img/img-repair-survives-crash-states.sh
TESTS += $(IMG_TESTS)
EXTRA_DIST += $(IMG_TESTS)
