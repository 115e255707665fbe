TESTS += tests/server/cli-rejects-bad-options.sh \
	tests/server/sighup-reopens-log-file.sh
EXTRA_DIST += tests/server/cli-rejects-bad-options.sh \
	tests/server/sighup-reopens-log-file.sh
