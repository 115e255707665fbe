# tests/bitmaps-server: dirty bitmaps as the server exports them
# (qemu:dirty-bitmap:NAME contexts, -B) and manages them (the QMP control
# socket), against qemu-img-made images with qemu-nbd, nbdinfo and
# qemu-img as oracles, and a libnbd backup agent doing incremental
# backups through checkpoint rotations.

BITMAPS_SERVER_TESTS = \
	tests/bitmaps-server/dirty-maps-match-qemu-nbd.sh \
	tests/bitmaps-server/meta-context-answers-match-qemu-nbd.py \
	tests/bitmaps-server/block-status-chunks-are-well-formed.py \
	tests/bitmaps-server/qmp-commands-manage-bitmaps.py \
	tests/bitmaps-server/bitmap-option-restricts-offered-set.sh \
	tests/bitmaps-server/incremental-backup-reproduces-image.sh \
	tests/bitmaps-server/crash-safe-bitmaps-cover-every-write-after-server-kill-9.sh \
	tests/bitmaps-server/img-bitmap-control-matches-offline.sh

TESTS += $(BITMAPS_SERVER_TESTS)

if HAVE_TESTS
check_PROGRAMS += tests/bitmaps-server/backup-agent
tests_bitmaps_server_backup_agent_SOURCES = \
	tests/bitmaps-server/backup-agent.c
tests_bitmaps_server_backup_agent_CFLAGS = $(TESTS_LIBNBD_CFLAGS)
tests_bitmaps_server_backup_agent_LDADD = $(TESTS_LIBNBD_LIBS)
endif
EXTRA_DIST += $(BITMAPS_SERVER_TESTS) \
	tests/bitmaps-server/bitmap-functions.sh \
	tests/bitmaps-server/bmtest.py

