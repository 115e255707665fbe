# tests/unit

# test-protocol: every encoder and decoder of protocol/, and request
# validation against the spec.
TESTS += tests/unit/test-protocol
check_PROGRAMS += tests/unit/test-protocol
tests_unit_test_protocol_SOURCES = tests/unit/test-protocol.c
tests_unit_test_protocol_LDADD = libdsproto.a

# test-qcow2-crypto: LUKS and legacy AES qcow2 encryption against images
# qemu-img and qemu-io write, and headers qemu-io reads back.
check_PROGRAMS += tests/unit/test-qcow2-crypto
TESTS += tests/unit/test-qcow2-crypto
tests_unit_test_qcow2_crypto_SOURCES = tests/unit/test-qcow2-crypto.c \
	formats/qcow2/crypto.h formats/qcow2/crypto-int.h \
	formats/qcow2/crypto.c formats/qcow2/luks.c formats/io.h formats/io.c
tests_unit_test_qcow2_crypto_CFLAGS = $(AM_CFLAGS) $(NETTLE_CFLAGS)
tests_unit_test_qcow2_crypto_LDADD = $(NETTLE_LIBS)

# test-vhdx-crc32c: CRC-32C over ISA-L against known vectors and the
# checksums in headers and region tables qemu-img writes.
check_PROGRAMS += tests/unit/test-vhdx-crc32c
TESTS += tests/unit/test-vhdx-crc32c
tests_unit_test_vhdx_crc32c_SOURCES = tests/unit/test-vhdx-crc32c.c \
	formats/vhdx/vhdx.h formats/vhdx/crc32c.c
tests_unit_test_vhdx_crc32c_CFLAGS = $(AM_CFLAGS) $(ISAL_CFLAGS)
tests_unit_test_vhdx_crc32c_LDADD = $(ISAL_LIBS)
