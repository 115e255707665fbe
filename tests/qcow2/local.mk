# tests/qcow2: the qcow2 driver's read side against qemu-img / qemu-io /
# qemu-nbd as oracles, on images the tests build.

# A driver-level checker the shell tests run on each image they build.
check_PROGRAMS += tests/qcow2/qcow2-read-check
tests_qcow2_qcow2_read_check_SOURCES = tests/qcow2/qcow2-read-check.c
tests_qcow2_qcow2_read_check_LDADD = $(FORMATS_LIBS)

# The L2 cache alone, many threads against few slots.
check_PROGRAMS += tests/qcow2/qcow2-cache-keeps-pinned-tables
TESTS += tests/qcow2/qcow2-cache-keeps-pinned-tables
tests_qcow2_qcow2_cache_keeps_pinned_tables_SOURCES = \
	tests/qcow2/qcow2-cache-keeps-pinned-tables.c \
	formats/qcow2/cache.c formats/io.c

# Grows an L1 table whose clusters start a refcount range with no block
# while the free-cluster scan is below them.
check_PROGRAMS += tests/qcow2/qcow2-l1-growth-at-range-start
tests_qcow2_qcow2_l1_growth_at_range_start_SOURCES = \
	tests/qcow2/qcow2-l1-growth-at-range-start.c
tests_qcow2_qcow2_l1_growth_at_range_start_LDADD = $(FORMATS_LIBS)

# Drives the driver to grow an L1 table, which no valid image needs.
check_PROGRAMS += tests/qcow2/qcow2-write-grow-l1
tests_qcow2_qcow2_write_grow_l1_SOURCES = tests/qcow2/qcow2-write-grow-l1.c
tests_qcow2_qcow2_write_grow_l1_LDADD = $(FORMATS_LIBS)

EXTRA_DIST += tests/qcow2/qcow2-functions.sh tests/qcow2/qcow2poke.py \
	tests/qcow2/qcow2-write-functions.sh tests/qcow2/qcow2-free-drain.py \
	tests/qcow2/qcow2-write-workload.py tests/qcow2/qcow2-ackcopy.py

QCOW2_TESTS = \
	tests/qcow2/qcow2-cluster-sizes-match-qemu.sh \
	tests/qcow2/qcow2-compressed-match-qemu.sh \
	tests/qcow2/qcow2-subclusters-match-qemu.sh \
	tests/qcow2/qcow2-backing-chain-matches-qemu.sh \
	tests/qcow2/qcow2-data-file-matches-qemu.sh \
	tests/qcow2/qcow2-snapshot-exports-old-data.sh \
	tests/qcow2/qcow2-encrypted-matches-qemu.sh \
	tests/qcow2/qcow2-encrypted-alignment-follows-negotiation.sh \
	tests/qcow2/qcow2-luks-open-bounds-key-derivation.sh \
	tests/qcow2/qcow2-write-refused-after-failed-sync.sh \
	tests/qcow2/qcow2-refuses-malformed-images.sh \
	tests/qcow2/qcow2-refuses-writing-over-uncounted-metadata.sh \
	tests/qcow2/qcow2-bad-entries-fail-only-their-request.sh \
	tests/qcow2/qcow2-preallocation-matches-qemu.sh \
	tests/qcow2/qcow2-small-cache-serves-concurrent-readers.sh

# The write path: qemu-img check and compare against a shadow kept by
# the workload client (qcow2-write-workload.py) judge every image.
QCOW2_TESTS += \
	tests/qcow2/qcow2-write-cluster-sizes-match-shadow.sh \
	tests/qcow2/qcow2-write-subclusters-match-shadow.sh \
	tests/qcow2/qcow2-write-backing-match-shadow.sh \
	tests/qcow2/qcow2-write-compressed-base-match-shadow.sh \
	tests/qcow2/qcow2-write-lazy-refcounts-match-shadow.sh \
	tests/qcow2/qcow2-write-encrypted-match-shadow.sh \
	tests/qcow2/qcow2-write-grows-refcount-and-l2-tables.sh \
	tests/qcow2/qcow2-write-grows-l1.sh \
	tests/qcow2/qcow2-write-l1-growth-keeps-its-clusters.sh \
	tests/qcow2/qcow2-write-frees-drain-after-inline-reads.sh \
	tests/qcow2/qcow2-every-acknowledged-write-passes-check.sh \
	tests/qcow2/qcow2-write-zeroes-honour-flags.sh \
	tests/qcow2/qcow2-write-concurrent-writers-keep-data.sh \
	tests/qcow2/qcow2-write-snapshots-and-data-files-match-shadow.sh \
	tests/qcow2/qcow2-write-marks-corrupt.sh
QCOW2_TESTS += \
	tests/qcow2/qcow2-write-snapshot-l2-copy-survives-enomem.sh \
	tests/qcow2/qcow2-write-zeroes-no-hole-keeps-allocation.sh
TESTS += $(QCOW2_TESTS)
EXTRA_DIST += $(QCOW2_TESTS)
