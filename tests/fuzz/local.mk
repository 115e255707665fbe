# tests/fuzz: libFuzzer targets (see DEVELOPERS.md).  `make check` builds
# each with gcc and fuzz-main.c and replays its seed corpus, made by
# make-corpus.sh into the build tree; `make fuzz` builds them with clang
# and libFuzzer into fuzz/, `make fuzz-smoke` runs each for 60 s.

FUZZ_TARGETS = fuzz-qcow2-open fuzz-qcow2-check fuzz-vhdx fuzz-luks \
	fuzz-requests fuzz-handshake

EXTRA_DIST += tests/fuzz/fuzz.h tests/fuzz/make-corpus.sh \
	tests/fuzz/make-handshake-corpus.py tests/fuzz/make-vhdx-corpus.py \
	tests/fuzz/make-requests-corpus.py tests/fuzz/fuzz-functions.sh

check_PROGRAMS += tests/fuzz/fuzz-qcow2-open tests/fuzz/fuzz-qcow2-check \
	tests/fuzz/fuzz-vhdx tests/fuzz/fuzz-luks tests/fuzz/fuzz-requests \
	tests/fuzz/fuzz-handshake
tests_fuzz_fuzz_qcow2_open_SOURCES = tests/fuzz/fuzz-qcow2-open.c \
	tests/fuzz/fuzz-image.c tests/fuzz/fuzz-image.h \
	tests/fuzz/fuzz-main.c tests/fuzz/fuzz.h
tests_fuzz_fuzz_qcow2_open_LDADD = $(FORMATS_LIBS)
tests_fuzz_fuzz_qcow2_check_SOURCES = tests/fuzz/fuzz-qcow2-check.c \
	tests/fuzz/fuzz-image.c tests/fuzz/fuzz-image.h \
	tests/fuzz/fuzz-main.c tests/fuzz/fuzz.h
tests_fuzz_fuzz_qcow2_check_LDADD = $(FORMATS_LIBS)
tests_fuzz_fuzz_vhdx_SOURCES = tests/fuzz/fuzz-vhdx.c \
	tests/fuzz/fuzz-image.c tests/fuzz/fuzz-image.h \
	tests/fuzz/fuzz-main.c tests/fuzz/fuzz.h
tests_fuzz_fuzz_vhdx_LDADD = $(FORMATS_LIBS)
tests_fuzz_fuzz_luks_SOURCES = tests/fuzz/fuzz-luks.c \
	tests/fuzz/fuzz-image.c tests/fuzz/fuzz-image.h \
	tests/fuzz/fuzz-main.c tests/fuzz/fuzz.h
tests_fuzz_fuzz_luks_LDADD = $(FORMATS_LIBS)
tests_fuzz_fuzz_requests_SOURCES = tests/fuzz/fuzz-requests.c \
	tests/fuzz/fuzz-image.c tests/fuzz/fuzz-image.h \
	tests/fuzz/fuzz-main.c tests/fuzz/fuzz.h
tests_fuzz_fuzz_requests_LDADD = $(FORMATS_LIBS) libdsproto.a
tests_fuzz_fuzz_handshake_SOURCES = tests/fuzz/fuzz-handshake.c \
	tests/fuzz/fuzz-main.c tests/fuzz/fuzz.h
tests_fuzz_fuzz_handshake_LDADD = libdsproto.a

FUZZ_TESTS = \
	tests/fuzz/fuzz-qcow2-open-survives-seed-corpus.sh \
	tests/fuzz/fuzz-qcow2-check-survives-seed-corpus.sh \
	tests/fuzz/fuzz-vhdx-survives-seed-corpus.sh \
	tests/fuzz/fuzz-luks-survives-seed-corpus.sh \
	tests/fuzz/fuzz-requests-survives-seed-corpus.sh \
	tests/fuzz/fuzz-handshake-survives-seed-corpus.sh
TESTS += $(FUZZ_TESTS)
EXTRA_DIST += $(FUZZ_TESTS)
CLEANFILES += tests/fuzz/corpus-*/*

# The libFuzzer build: every source compiled straight into each target
# with clang, so nothing of the gcc build is reused.
FUZZ_CC = clang-14
FUZZ_CFLAGS = -g -O1 -fno-omit-frame-pointer \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_TIME = 60
FUZZ_RUN_FLAGS = -max_total_time=$(FUZZ_TIME) -timeout=10 \
	-malloc_limit_mb=512 -max_len=1048576

# fuzz_cc SOURCES... : compile and link one target into $@.
fuzz_cc = $(FUZZ_CC) $(FUZZ_CFLAGS) -std=gnu11 -pthread $(WARN_CFLAGS) \
	-Wno-error $(AM_CPPFLAGS) $(ZLIB_CFLAGS) $(ZSTD_CFLAGS) \
	$(NETTLE_CFLAGS) $(ISAL_CFLAGS) -o $@

# The targets over formats/: every formats source plus the target's own
# and the shared helpers.
FUZZ_FORMAT_TARGETS = fuzz/fuzz-qcow2-open fuzz/fuzz-qcow2-check \
	fuzz/fuzz-vhdx fuzz/fuzz-luks fuzz/fuzz-requests
$(FUZZ_FORMAT_TARGETS): fuzz/%: $(libdsformats_a_SOURCES) tests/fuzz/%.c \
		tests/fuzz/fuzz-image.c tests/fuzz/fuzz-image.h
	@$(MKDIR_P) fuzz
	srcs=; for f in $(libdsformats_a_SOURCES); do \
	  case $$f in *.c) srcs="$$srcs $(srcdir)/$$f";; esac; \
	done; \
	$(fuzz_cc) $$srcs $(srcdir)/tests/fuzz/$*.c \
	  $(srcdir)/tests/fuzz/fuzz-image.c $(srcdir)/protocol/protocol.c \
	  $(ZLIB_LIBS) $(ZSTD_LIBS) $(NETTLE_LIBS) $(ISAL_LIBS) $(RBD_LIBS) -lm

fuzz/fuzz-handshake: $(libdsproto_a_SOURCES) tests/fuzz/fuzz-handshake.c
	@$(MKDIR_P) fuzz
	$(fuzz_cc) $(srcdir)/protocol/protocol.c \
	  $(srcdir)/tests/fuzz/fuzz-handshake.c

fuzz: $(FUZZ_FORMAT_TARGETS) fuzz/fuzz-handshake

# Each target for FUZZ_TIME seconds, from the seed corpus (generated
# into fuzz/corpus-TARGET, where libFuzzer also keeps what it finds) with
# its dictionary, two targets at a time (tests/fuzz/smoke-one.sh); one
# line "fuzz-smoke: TARGET: PASS|FAIL" each, and a crash leaves its input
# in fuzz/ as crash-* and fails the rule after the last target.
FUZZ_SMOKE = qcow2-open:qcow2 qcow2-check:qcow2 vhdx:vhdx luks:qcow2 \
	requests:nbd handshake:nbd
EXTRA_DIST += tests/fuzz/qcow2.dict tests/fuzz/vhdx.dict tests/fuzz/nbd.dict \
	tests/fuzz/smoke-one.sh
fuzz-smoke: fuzz
	@printf '%s\n' $(FUZZ_SMOKE) | xargs -P 2 -I '{}' \
	  $(SHELL) $(srcdir)/tests/fuzz/smoke-one.sh '{}' $(srcdir) \
	  $(FUZZ_RUN_FLAGS)

clean-local: clean-fuzz
clean-fuzz:
	rm -rf fuzz tests/fuzz/corpus-*
.PHONY: fuzz fuzz-smoke clean-fuzz
