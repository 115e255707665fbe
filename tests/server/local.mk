TESTS += tests/server/cli-rejects-bad-options.sh \
	tests/server/sighup-reopens-log-file.sh \
	tests/server/idle-clients-cost-no-threads.py
EXTRA_DIST += tests/server/cli-rejects-bad-options.sh \
	tests/server/sighup-reopens-log-file.sh \
	tests/server/idle-clients-cost-no-threads.py
