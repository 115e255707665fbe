# tests/tls: NBD over TLS (STARTTLS): real clients (libnbd tools, qemu),
# refusals, raw handshakes with Python's ssl module (tlsraw.py on top of
# tests/protocol/nbdraw.py), and a soak.  Certificates and keys are made
# during each test (tls-functions.sh), never kept.
TLS_TESTS = \
	tests/tls/libnbd-tools-read-write-and-map-over-tls.sh \
	tests/tls/qemu-reads-writes-and-maps-over-tls.sh \
	tests/tls/tls-refuses-untrusted-certificates.sh \
	tests/tls/tls-refuses-wrong-psk.sh \
	tests/tls/starttls-forgets-earlier-negotiation.py \
	tests/tls/tls-require-refuses-plain-clients.py \
	tests/tls/tls-handshake-garbage-and-stalls-are-dropped.py \
	tests/tls/tls-soak-1000-connections-leaks-nothing.py \
	tests/tls/socket-activation-serves-tls.sh \
	tests/tls/sighup-reloads-tls-credentials.sh \
	tests/tls/unix-socket-mode-and-group-limit-access.sh \
	tests/tls/tls-options-are-checked-at-startup.sh \
	tests/tls/config-file-sets-tls-per-export.sh \
	tests/tls/tls-batched-replies-leave-in-few-writes.py \
	tests/tls/tls-slow-reader-gets-big-replies-intact.py \
	tests/tls/dirty-bitmaps-over-tls-match-plain.sh \
	tests/tls/stdio-serves-a-tls-client.sh

TESTS += $(TLS_TESTS)
EXTRA_DIST += $(TLS_TESTS) tests/tls/tls-functions.sh tests/tls/tlsraw.py
