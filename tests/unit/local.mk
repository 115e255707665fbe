# tests/unit

# test-protocol: every encoder and decoder of protocol/, and request
# validation against the spec.
TESTS += tests/unit/test-protocol
check_PROGRAMS += tests/unit/test-protocol
tests_unit_test_protocol_SOURCES = tests/unit/test-protocol.c
tests_unit_test_protocol_LDADD = libdsproto.a
