/* NBD message encoding, decoding and request validation.
 *
 * Everything here works on caller-owned byte buffers and returns sizes or
 * negative errno values; see protocol.h for the conventions.  The server
 * calls proto_validate_request() once per request so that drivers only
 * ever see in-range, well-formed operations.
 */
#include <errno.h>
#include <string.h>

#include "protocol.h"

size_t proto_encode_greeting(uint8_t *buf, uint16_t handshake_flags)
{
    proto_put64(buf, PROTO_INIT_PASSWD);
    proto_put64(buf + 8, PROTO_IHAVEOPT);
    proto_put16(buf + 16, handshake_flags);
    return PROTO_GREETING_LEN;
}

int proto_decode_client_flags(const uint8_t *buf, size_t len,
                              uint16_t offered, uint32_t *flags)
{
    if (len < PROTO_CLIENT_FLAGS_LEN)
        return -EAGAIN;
    uint32_t f = proto_get32(buf);
    if (f & ~PROTO_FLAG_C_KNOWN)
        return -EPROTO;
    /* The client flag bits mirror the handshake flag bits. */
    if (f & ~(uint32_t)offered)
        return -EPROTO;
    *flags = f;
    return PROTO_CLIENT_FLAGS_LEN;
}

int proto_decode_option(const uint8_t *buf, size_t len,
                        struct proto_option *opt)
{
    if (len < PROTO_OPT_HDR_LEN)
        return -EAGAIN;
    if (proto_get64(buf) != PROTO_IHAVEOPT)
        return -EPROTO;
    opt->option = proto_get32(buf + 8);
    opt->length = proto_get32(buf + 12);
    return PROTO_OPT_HDR_LEN;
}

size_t proto_encode_option_reply(uint8_t *buf, uint32_t option,
                                 uint32_t reply_type, uint32_t data_len)
{
    proto_put64(buf, PROTO_OPT_REPLY_MAGIC);
    proto_put32(buf + 8, option);
    proto_put32(buf + 12, reply_type);
    proto_put32(buf + 16, data_len);
    return PROTO_OPT_REPLY_HDR_LEN;
}

size_t proto_encode_export_name_reply(uint8_t *buf, uint64_t size,
                                      uint16_t tflags, bool no_zeroes)
{
    proto_put64(buf, size);
    proto_put16(buf + 8, tflags);
    if (no_zeroes)
        return 10;
    memset(buf + 10, 0, 124);
    return PROTO_EXPORT_NAME_REPLY_LEN;
}

int proto_decode_go(const uint8_t *data, uint32_t len, struct proto_go *go)
{
    /* name length, name, count, requests: at least 6 bytes. */
    if (len < 6)
        return -EPROTO;
    uint32_t name_len = proto_get32(data);
    if (name_len > len - 6)
        return -EPROTO;
    const uint8_t *p = data + 4 + name_len;
    uint16_t n = proto_get16(p);
    if ((uint64_t)4 + name_len + 2 + 2ull * n != len)
        return -EPROTO;
    go->name = data + 4;
    go->name_len = name_len;
    go->n_requests = n;
    go->requests = p + 2;
    return 0;
}

int proto_decode_meta(const uint8_t *data, uint32_t len,
                      struct proto_meta *meta)
{
    if (len < 8)
        return -EPROTO;
    uint32_t name_len = proto_get32(data);
    if (name_len > len - 8)
        return -EPROTO;
    uint32_t off = 4 + name_len;
    uint32_t n = proto_get32(data + off);
    off += 4;
    uint32_t pos = off;
    for (uint32_t i = 0; i < n; i++) {
        if (len - pos < 4)
            return -EPROTO;
        uint32_t qlen = proto_get32(data + pos);
        pos += 4;
        if (qlen > len - pos)
            return -EPROTO;
        pos += qlen;
    }
    if (pos != len)
        return -EPROTO;
    meta->name = data + 4;
    meta->name_len = name_len;
    meta->n_queries = n;
    meta->queries = data + off;
    meta->queries_len = len - off;
    return 0;
}

bool proto_meta_next(const struct proto_meta *meta, uint32_t *pos,
                     const uint8_t **query, uint32_t *query_len)
{
    if (*pos + 4 > meta->queries_len)
        return false;
    uint32_t qlen = proto_get32(meta->queries + *pos);
    *query = meta->queries + *pos + 4;
    *query_len = qlen;
    *pos += 4 + qlen;
    return true;
}

size_t proto_encode_info_export(uint8_t *buf, uint64_t size, uint16_t tflags)
{
    proto_put16(buf, PROTO_INFO_EXPORT);
    proto_put64(buf + 2, size);
    proto_put16(buf + 10, tflags);
    return PROTO_INFO_EXPORT_LEN;
}

size_t proto_encode_info_block_size(uint8_t *buf, uint32_t min,
                                    uint32_t pref, uint32_t max)
{
    proto_put16(buf, PROTO_INFO_BLOCK_SIZE);
    proto_put32(buf + 2, min);
    proto_put32(buf + 6, pref);
    proto_put32(buf + 10, max);
    return PROTO_INFO_BLOCK_SIZE_LEN;
}

size_t proto_encode_info_string(uint8_t *buf, uint16_t type,
                                const char *s, uint32_t len)
{
    proto_put16(buf, type);
    memcpy(buf + 2, s, len);
    return 2 + (size_t)len;
}

size_t proto_encode_rep_server(uint8_t *buf, const char *name, uint32_t len)
{
    proto_put32(buf, len);
    memcpy(buf + 4, name, len);
    return 4 + (size_t)len;
}

size_t proto_encode_meta_context(uint8_t *buf, uint32_t id,
                                 const char *name, uint32_t len)
{
    proto_put32(buf, id);
    memcpy(buf + 4, name, len);
    return 4 + (size_t)len;
}

int proto_decode_request(const uint8_t *buf, size_t len, bool extended,
                         struct proto_request *req)
{
    size_t need = extended ? PROTO_EXT_REQUEST_LEN : PROTO_REQUEST_LEN;
    if (len < 4)
        return -EAGAIN;
    uint32_t magic = proto_get32(buf);
    if (magic != (extended ? PROTO_EXT_REQUEST_MAGIC : PROTO_REQUEST_MAGIC))
        return -EPROTO;
    if (len < need)
        return -EAGAIN;
    req->flags = proto_get16(buf + 4);
    req->type = proto_get16(buf + 6);
    req->cookie = proto_get64(buf + 8);
    req->offset = proto_get64(buf + 16);
    req->length = extended ? proto_get64(buf + 24) : proto_get32(buf + 24);
    return (int)need;
}

size_t proto_encode_request(uint8_t *buf, bool extended,
                            const struct proto_request *req)
{
    proto_put32(buf, extended ? PROTO_EXT_REQUEST_MAGIC : PROTO_REQUEST_MAGIC);
    proto_put16(buf + 4, req->flags);
    proto_put16(buf + 6, req->type);
    proto_put64(buf + 8, req->cookie);
    proto_put64(buf + 16, req->offset);
    if (extended) {
        proto_put64(buf + 24, req->length);
        return PROTO_EXT_REQUEST_LEN;
    }
    proto_put32(buf + 24, (uint32_t)req->length);
    return PROTO_REQUEST_LEN;
}

size_t proto_encode_simple_reply(uint8_t *buf, uint64_t cookie,
                                 uint32_t error)
{
    proto_put32(buf, PROTO_SIMPLE_REPLY_MAGIC);
    proto_put32(buf + 4, error);
    proto_put64(buf + 8, cookie);
    return PROTO_SIMPLE_REPLY_LEN;
}

size_t proto_encode_chunk(uint8_t *buf, bool extended, uint16_t flags,
                          uint16_t type, uint64_t cookie, uint64_t offset,
                          uint64_t payload_len)
{
    proto_put32(buf, extended ? PROTO_EXT_REPLY_MAGIC
                              : PROTO_STRUCT_REPLY_MAGIC);
    proto_put16(buf + 4, flags);
    proto_put16(buf + 6, type);
    proto_put64(buf + 8, cookie);
    if (extended) {
        proto_put64(buf + 16, offset);
        proto_put64(buf + 24, payload_len);
        return PROTO_EXT_REPLY_LEN;
    }
    proto_put32(buf + 16, (uint32_t)payload_len);
    return PROTO_STRUCT_REPLY_LEN;
}

size_t proto_encode_hole(uint8_t *buf, uint64_t offset, uint32_t length)
{
    proto_put64(buf, offset);
    proto_put32(buf + 8, length);
    return PROTO_OFFSET_HOLE_LEN;
}

size_t proto_encode_error(uint8_t *buf, uint32_t error, const char *msg,
                          uint16_t msg_len, bool with_offset,
                          uint64_t offset)
{
    proto_put32(buf, error);
    proto_put16(buf + 4, msg_len);
    memcpy(buf + 6, msg, msg_len);
    size_t n = PROTO_ERROR_PREFIX + msg_len;
    if (with_offset) {
        proto_put64(buf + n, offset);
        n += 8;
    }
    return n;
}

size_t proto_encode_bs_header(uint8_t *buf, bool extended, uint32_t id,
                              uint32_t count)
{
    proto_put32(buf, id);
    if (!extended)
        return PROTO_BS_HDR_LEN;
    proto_put32(buf + 4, count);
    return PROTO_BS_EXT_HDR_LEN;
}

size_t proto_encode_bs_desc(uint8_t *buf, bool extended, uint64_t length,
                            uint32_t flags)
{
    if (extended) {
        proto_put64(buf, length);
        proto_put64(buf + 8, flags);
        return PROTO_BS_EXT_DESC_LEN;
    }
    proto_put32(buf, (uint32_t)length);
    proto_put32(buf + 4, flags);
    return PROTO_BS_DESC_LEN;
}

uint64_t proto_request_payload(const struct proto_request *req,
                               bool extended)
{
    if (req->type == PROTO_CMD_WRITE)
        return req->length;
    if (extended && (req->flags & PROTO_CMD_FLAG_PAYLOAD_LEN))
        return req->length;
    return 0;
}


static bool is_write_cmd(uint16_t type)
{
    return type == PROTO_CMD_WRITE || type == PROTO_CMD_WRITE_ZEROES ||
           type == PROTO_CMD_TRIM;
}

uint32_t proto_validate_request(const struct proto_request *req,
                                const struct proto_limits *lim)
{
    uint16_t allowed = PROTO_CMD_FLAG_FUA;
    uint16_t t = lim->tflags;

    /* Before "not advertised": a read-only export advertises no trim or
     * zeroing, yet the spec asks for EPERM on every write there. */
    if (is_write_cmd(req->type) && (t & PROTO_TFLAG_READ_ONLY))
        return PROTO_EPERM;

    switch (req->type) {
    case PROTO_CMD_READ:
        if (lim->structured)
            allowed |= PROTO_CMD_FLAG_DF;
        break;
    case PROTO_CMD_WRITE:
        break;
    case PROTO_CMD_FLUSH:
        if (!(t & PROTO_TFLAG_SEND_FLUSH))
            return PROTO_EINVAL;
        break;
    case PROTO_CMD_TRIM:
        if (!(t & PROTO_TFLAG_SEND_TRIM))
            return PROTO_EINVAL;
        break;
    case PROTO_CMD_CACHE:
        if (!(t & PROTO_TFLAG_SEND_CACHE))
            return PROTO_EINVAL;
        break;
    case PROTO_CMD_WRITE_ZEROES:
        if (!(t & PROTO_TFLAG_SEND_WRITE_ZEROES))
            return PROTO_EINVAL;
        allowed |= PROTO_CMD_FLAG_NO_HOLE;
        if (t & PROTO_TFLAG_SEND_FAST_ZERO)
            allowed |= PROTO_CMD_FLAG_FAST_ZERO;
        break;
    case PROTO_CMD_BLOCK_STATUS:
        if (!lim->structured || !lim->has_meta)
            return PROTO_EINVAL;
        allowed |= PROTO_CMD_FLAG_REQ_ONE;
        break;
    default:
        return PROTO_EINVAL;
    }
    if ((req->flags & PROTO_CMD_FLAG_FUA) && !(t & PROTO_TFLAG_SEND_FUA))
        return PROTO_EINVAL;
    if (lim->extended && req->type == PROTO_CMD_WRITE)
        allowed |= PROTO_CMD_FLAG_PAYLOAD_LEN;
    if (req->flags & ~allowed)
        return PROTO_EINVAL;

    if (req->type == PROTO_CMD_FLUSH)
        return 0;
    if ((req->type == PROTO_CMD_READ || req->type == PROTO_CMD_WRITE) &&
        req->length > lim->max_payload)
        return PROTO_EINVAL;
    if (req->type == PROTO_CMD_BLOCK_STATUS && req->length == 0)
        return PROTO_EINVAL;
    /* The spec asks clients to align these to the minimum block size
     * and servers to answer EINVAL when they do not. */
    if (lim->min_block > 1 && req->type != PROTO_CMD_BLOCK_STATUS &&
        ((req->offset | req->length) & (lim->min_block - 1)))
        return PROTO_EINVAL;
    if (req->offset > lim->export_size ||
        req->length > lim->export_size - req->offset)
        return req->type == PROTO_CMD_WRITE ||
               req->type == PROTO_CMD_WRITE_ZEROES ? PROTO_ENOSPC
                                                   : PROTO_EINVAL;
    return 0;
}

uint32_t proto_errno_to_wire(int err)
{
    switch (err) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
        return PROTO_EPERM;
    case EIO:
    /* The storage behind the image failed or did not answer (a
     * network backend's timeout, a dropped connection, corrupt data):
     * an I/O error to the client, not an invalid request. */
    case ETIMEDOUT:
    case ECONNRESET:
    case ECONNABORTED:
    case ECONNREFUSED:
    case ENOTCONN:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EBADMSG:
    case EUCLEAN:
        return PROTO_EIO;
    case ENOMEM:
        return PROTO_ENOMEM;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return PROTO_ENOSPC;
    case EOVERFLOW:
        return PROTO_EOVERFLOW;
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
        return PROTO_ENOTSUP;
    case ESHUTDOWN:
        return PROTO_ESHUTDOWN;
    default:
        return PROTO_EINVAL;
    }
}

const char *proto_cmd_name(uint16_t type)
{
    static const char *const names[] = {
        "READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE",
        "WRITE_ZEROES", "BLOCK_STATUS", "RESIZE",
    };
    if (type < sizeof names / sizeof names[0])
        return names[type];
    return "UNKNOWN";
}

const char *proto_opt_name(uint32_t option)
{
    static const char *const names[] = {
        "0", "EXPORT_NAME", "ABORT", "LIST", "PEEK_EXPORT", "STARTTLS",
        "INFO", "GO", "STRUCTURED_REPLY", "LIST_META_CONTEXT",
        "SET_META_CONTEXT", "EXTENDED_HEADERS",
    };
    if (option < sizeof names / sizeof names[0])
        return names[option];
    return "UNKNOWN";
}
