# tests/vhdx: the VHDX driver, reads, writes and log replay, against
# qemu-img (which makes files, checks them and replays logs) and libvhdi
# (an independent reader) as oracles.
EXTRA_DIST += tests/vhdx/vhdxpoke.py tests/vhdx/vhdx-check.py \
	tests/vhdx/vhdxcrc.py tests/vhdx/vhdx-functions.sh \
	tests/vhdx/vhdxlog.py tests/vhdx/vhdxdiff.py \
	tests/vhdx/vhdx-log-fixtures.sh tests/vhdx/vhdxhdr.py \
	tests/vhdx/vhdxcmp.py tests/vhdx/vhdx-write-functions.sh

VHDX_TESTS = \
	tests/vhdx/vhdx-geometries-match-qemu.sh \
	tests/vhdx/vhdx-refuses-malformed-files.sh \
	tests/vhdx/vhdx-read-only-export-replays-pending-log.sh \
	tests/vhdx/vhdx-differencing-chain-matches-libvhdi.sh \
	tests/vhdx/vhdx-read-write-open-replays-pending-log-into-file.sh \
	tests/vhdx/vhdx-concurrent-writes-to-qemu-made-files-match-shadow.sh \
	tests/vhdx/vhdx-created-files-with-512-and-4096-byte-sectors-take-concurrent-writes.sh \
	tests/vhdx/vhdx-killed-between-log-flush-and-apply-replays-as-qemu-does.sh \
	tests/vhdx/vhdx-differencing-writes-match-libvhdi.sh \
	tests/vhdx/vhdx-created-differencing-chains-take-writes-and-match-libvhdi.sh \
	tests/vhdx/vhdx-refused-fast-zero-changes-nothing-in-differencing-child.sh
TESTS += $(VHDX_TESTS)
EXTRA_DIST += $(VHDX_TESTS)
