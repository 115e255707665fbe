"""CRC-32C (Castagnoli) as VHDX uses it, for the test scripts that build
or change VHDX structures: an independent implementation, a plain table,
so that the tests do not check the driver's checksums with the driver's
own code."""


def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


TABLE = _table()


def crc32c(data):
    """The CRC-32C of bytes data (initial value and final xor all ones)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
