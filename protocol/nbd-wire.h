/* The NBD wire format: magic numbers, flags, option, command, reply and
 * error codes, and the fixed-size headers as packed big-endian structs.
 * No logic lives here; encode/decode is in protocol.c.  Names follow
 * doc/proto.md with a PROTO_ prefix so this header can sit beside
 * libnbd's in the tests.
 */
#ifndef DISKSERVE_NBD_WIRE_H
#define DISKSERVE_NBD_WIRE_H

#include <stdint.h>

/* Handshake magics. */
#define PROTO_INIT_PASSWD          0x4e42444d41474943ULL /* "NBDMAGIC" */
#define PROTO_IHAVEOPT             0x49484156454f5054ULL /* "IHAVEOPT" */
#define PROTO_OPT_REPLY_MAGIC      0x0003e889045565a9ULL

/* Transmission magics. */
#define PROTO_REQUEST_MAGIC        0x25609513u
#define PROTO_EXT_REQUEST_MAGIC    0x21e41c71u
#define PROTO_SIMPLE_REPLY_MAGIC   0x67446698u
#define PROTO_STRUCT_REPLY_MAGIC   0x668e33efu
#define PROTO_EXT_REPLY_MAGIC      0x6e8a278cu

/* Handshake flags (server, 16 bits). */
#define PROTO_FLAG_FIXED_NEWSTYLE  (1u << 0)
#define PROTO_FLAG_NO_ZEROES       (1u << 1)

/* Client flags (32 bits). */
#define PROTO_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define PROTO_FLAG_C_NO_ZEROES      (1u << 1)
#define PROTO_FLAG_C_KNOWN          (PROTO_FLAG_C_FIXED_NEWSTYLE | \
                                     PROTO_FLAG_C_NO_ZEROES)

/* Transmission flags (16 bits). */
#define PROTO_TFLAG_HAS_FLAGS         (1u << 0)
#define PROTO_TFLAG_READ_ONLY         (1u << 1)
#define PROTO_TFLAG_SEND_FLUSH        (1u << 2)
#define PROTO_TFLAG_SEND_FUA          (1u << 3)
#define PROTO_TFLAG_ROTATIONAL        (1u << 4)
#define PROTO_TFLAG_SEND_TRIM         (1u << 5)
#define PROTO_TFLAG_SEND_WRITE_ZEROES (1u << 6)
#define PROTO_TFLAG_SEND_DF           (1u << 7)
#define PROTO_TFLAG_CAN_MULTI_CONN    (1u << 8)
#define PROTO_TFLAG_SEND_RESIZE       (1u << 9)
#define PROTO_TFLAG_SEND_CACHE        (1u << 10)
#define PROTO_TFLAG_SEND_FAST_ZERO    (1u << 11)
#define PROTO_TFLAG_BLOCK_STATUS_PAYLOAD (1u << 12)

/* Options. */
enum {
    PROTO_OPT_EXPORT_NAME      = 1,
    PROTO_OPT_ABORT            = 2,
    PROTO_OPT_LIST             = 3,
    PROTO_OPT_PEEK_EXPORT      = 4,
    PROTO_OPT_STARTTLS         = 5,
    PROTO_OPT_INFO             = 6,
    PROTO_OPT_GO               = 7,
    PROTO_OPT_STRUCTURED_REPLY = 8,
    PROTO_OPT_LIST_META_CONTEXT = 9,
    PROTO_OPT_SET_META_CONTEXT = 10,
    PROTO_OPT_EXTENDED_HEADERS = 11,
};

/* Option replies. */
#define PROTO_REP_ACK            1u
#define PROTO_REP_SERVER         2u
#define PROTO_REP_INFO           3u
#define PROTO_REP_META_CONTEXT   4u
#define PROTO_REP_FLAG_ERROR     (1u << 31)
#define PROTO_REP_ERR_UNSUP      (PROTO_REP_FLAG_ERROR | 1u)
#define PROTO_REP_ERR_POLICY     (PROTO_REP_FLAG_ERROR | 2u)
#define PROTO_REP_ERR_INVALID    (PROTO_REP_FLAG_ERROR | 3u)
#define PROTO_REP_ERR_PLATFORM   (PROTO_REP_FLAG_ERROR | 4u)
#define PROTO_REP_ERR_TLS_REQD   (PROTO_REP_FLAG_ERROR | 5u)
#define PROTO_REP_ERR_UNKNOWN    (PROTO_REP_FLAG_ERROR | 6u)
#define PROTO_REP_ERR_SHUTDOWN   (PROTO_REP_FLAG_ERROR | 7u)
#define PROTO_REP_ERR_BLOCK_SIZE_REQD (PROTO_REP_FLAG_ERROR | 8u)
#define PROTO_REP_ERR_TOO_BIG    (PROTO_REP_FLAG_ERROR | 9u)
#define PROTO_REP_ERR_EXT_HEADER_REQD (PROTO_REP_FLAG_ERROR | 10u)

/* NBD_REP_INFO types. */
enum {
    PROTO_INFO_EXPORT      = 0,
    PROTO_INFO_NAME        = 1,
    PROTO_INFO_DESCRIPTION = 2,
    PROTO_INFO_BLOCK_SIZE  = 3,
};

/* Commands. */
enum {
    PROTO_CMD_READ         = 0,
    PROTO_CMD_WRITE        = 1,
    PROTO_CMD_DISC         = 2,
    PROTO_CMD_FLUSH        = 3,
    PROTO_CMD_TRIM         = 4,
    PROTO_CMD_CACHE        = 5,
    PROTO_CMD_WRITE_ZEROES = 6,
    PROTO_CMD_BLOCK_STATUS = 7,
    PROTO_CMD_RESIZE       = 8,
};

/* Command flags. */
#define PROTO_CMD_FLAG_FUA         (1u << 0)
#define PROTO_CMD_FLAG_NO_HOLE     (1u << 1)
#define PROTO_CMD_FLAG_DF          (1u << 2)
#define PROTO_CMD_FLAG_REQ_ONE     (1u << 3)
#define PROTO_CMD_FLAG_FAST_ZERO   (1u << 4)
#define PROTO_CMD_FLAG_PAYLOAD_LEN (1u << 5)

/* Structured reply flags and types. */
#define PROTO_REPLY_FLAG_DONE      (1u << 0)
enum {
    PROTO_REPLY_TYPE_NONE             = 0,
    PROTO_REPLY_TYPE_OFFSET_DATA      = 1,
    PROTO_REPLY_TYPE_OFFSET_HOLE      = 2,
    PROTO_REPLY_TYPE_BLOCK_STATUS     = 5,
    PROTO_REPLY_TYPE_BLOCK_STATUS_EXT = 6,
    PROTO_REPLY_TYPE_ERROR            = (1 << 15) + 1,
    PROTO_REPLY_TYPE_ERROR_OFFSET     = (1 << 15) + 2,
};
#define PROTO_REPLY_TYPE_IS_ERR(t) (((t) & (1u << 15)) != 0)

/* Wire error values (not the host's errno numbers). */
enum {
    PROTO_EPERM      = 1,
    PROTO_EIO        = 5,
    PROTO_ENOMEM     = 12,
    PROTO_EINVAL     = 22,
    PROTO_ENOSPC     = 28,
    PROTO_EOVERFLOW  = 75,
    PROTO_ENOTSUP    = 95,
    PROTO_ESHUTDOWN  = 108,
};

/* base:allocation flags. */
#define PROTO_STATE_HOLE  (1u << 0)
#define PROTO_STATE_ZERO  (1u << 1)

/* Limits this implementation holds clients to. */
#define PROTO_MAX_STRING       4096u      /* spec: names, messages */
#define PROTO_MAX_OPTION_LEN   (64u * 1024) /* option payloads we read */
#define PROTO_MAX_PAYLOAD      (32u * 1024 * 1024)

/* Fixed header sizes on the wire. */
#define PROTO_OPT_HDR_LEN        16u /* magic, option, length */
#define PROTO_OPT_REPLY_HDR_LEN  20u /* magic, option, type, length */
#define PROTO_REQUEST_LEN        28u
#define PROTO_EXT_REQUEST_LEN    32u
#define PROTO_SIMPLE_REPLY_LEN   16u
#define PROTO_STRUCT_REPLY_LEN   20u
#define PROTO_EXT_REPLY_LEN      32u

#endif /* DISKSERVE_NBD_WIRE_H */
