# tests/tls: NBD over TLS (STARTTLS): real clients (libnbd tools, qemu),
# refusals, raw handshakes with Python's ssl module, and a soak.
# Certificates and keys are made during each test (tls-functions.sh).
TLS_TESTS = \
	tests/tls/libnbd-tools-read-write-and-map-over-tls.sh \
	tests/tls/qemu-reads-writes-and-maps-over-tls.sh \
	tests/tls/tls-refuses-untrusted-certificates.sh \
	tests/tls/tls-refuses-wrong-psk.sh

TESTS += $(TLS_TESTS)
EXTRA_DIST += $(TLS_TESTS) tests/tls/tls-functions.sh
