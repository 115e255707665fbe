# tests/rbd: formats over Ceph RBD images, on a one-node cluster each
# test script starts for itself (tests/rbd/micro-ceph.sh).
EXTRA_DIST += tests/rbd/micro-ceph.sh tests/rbd/rbd-functions.sh \
	tests/rbd/flush-then-kill.py

RBD_TESTS = \
	tests/rbd/raw-over-rbd-matches-shadow-and-rbd-diff.sh \
	tests/rbd/raw-over-rbd-loop-path-serves-many-connections-and-requests.sh \
	tests/rbd/qcow2-and-vhdx-in-rbd-images-pass-check-after-concurrent-writes.sh \
	tests/rbd/rbd-snapshot-exports-old-data-read-only.sh \
	tests/rbd/rbd-second-writer-and-bad-names-fail-with-one-line.sh \
	tests/rbd/rbd-snapshot-changes-export-as-dirty-bitmaps.sh \
	tests/rbd/qcow2-over-rbd-killed-mid-write-keeps-flushed-data.sh \
	tests/rbd/osd-killed-mid-workload-requests-wait-others-served.sh \
	tests/rbd/backing-files-and-vhdx-parents-in-rbd.sh
TESTS += $(RBD_TESTS)
EXTRA_DIST += $(RBD_TESTS)
