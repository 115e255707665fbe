/* CRC-32C for VHDX checksums, through ISA-L.
 *
 * [MS-VHDX] section 2 checksums every header, region table and log entry
 * with CRC-32C (Castagnoli, 0x1EDC6F41).  ISA-L's crc32_iscsi picks a
 * SIMD implementation at run time; it takes the running register (start
 * with ~0) and returns the register without the final inversion, so
 * CRC-32C(buf) = ~crc32_iscsi(buf, len, ~0).  tests/unit/test-vhdx-crc32c
 * holds that against the known vectors.
 */
#include <isa-l/crc.h>
#include <limits.h>
#include <string.h>

#include "vhdx.h"

uint32_t vhdx_crc32c(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t reg = 0xFFFFFFFFu;

    /* crc32_iscsi takes an int length. */
    while (len > 0) {
        size_t n = len > (size_t)INT_MAX ? (size_t)1 << 30 : len;
        reg = crc32_iscsi((unsigned char *)p, (int)n, reg);
        p += n;
        len -= n;
    }
    return ~reg;
}

bool vhdx_checksum_ok(const void *buf, size_t len, size_t csum_off)
{
    const unsigned char *p = buf;
    uint32_t stored, zero = 0;
    uint32_t reg = 0xFFFFFFFFu;

    memcpy(&stored, p + csum_off, 4);
    stored = le32toh(stored);
    reg = crc32_iscsi((unsigned char *)p, (int)csum_off, reg);
    reg = crc32_iscsi((unsigned char *)&zero, 4, reg);
    reg = crc32_iscsi((unsigned char *)p + csum_off + 4,
                      (int)(len - csum_off - 4), reg);
    return ~reg == stored;
}
