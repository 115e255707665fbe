TESTS += tests/server/cli-rejects-bad-options.sh
EXTRA_DIST += tests/server/cli-rejects-bad-options.sh
