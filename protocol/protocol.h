/* Encode and decode NBD messages to and from byte buffers.
 *
 * Pure functions: no sockets, no allocation, no globals.  Decoders take the
 * bytes received so far and return the number consumed, -EAGAIN when more
 * bytes are needed, or -EPROTO when the bytes can never form a valid
 * message.  Encoders write into a caller buffer sized by the PROTO_*_LEN
 * constants and return the number of bytes written.
 */
#ifndef DISKSERVE_PROTOCOL_H
#define DISKSERVE_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nbd-wire.h"

static inline void proto_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void proto_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void proto_put64(uint8_t *p, uint64_t v)
{
    proto_put32(p, (uint32_t)(v >> 32));
    proto_put32(p + 4, (uint32_t)v);
}

static inline uint16_t proto_get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t proto_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t proto_get64(const uint8_t *p)
{
    return ((uint64_t)proto_get32(p) << 32) | proto_get32(p + 4);
}

/* ---- handshake ---------------------------------------------------- */

#define PROTO_GREETING_LEN 18u   /* NBDMAGIC, IHAVEOPT, handshake flags */
#define PROTO_CLIENT_FLAGS_LEN 4u
#define PROTO_EXPORT_NAME_REPLY_LEN 134u /* size, flags, 124 zero bytes */

/* Write the fixed newstyle greeting; returns PROTO_GREETING_LEN. */
size_t proto_encode_greeting(uint8_t *buf, uint16_t handshake_flags);

/* Decode the client flags; -EPROTO when a flag is unknown or was not
 * offered by the server (the spec demands a disconnect). */
int proto_decode_client_flags(const uint8_t *buf, size_t len,
                              uint16_t offered, uint32_t *flags);

struct proto_option {
    uint32_t option;
    uint32_t length;            /* bytes of option data that follow */
};

/* Decode an option header; -EPROTO on a wrong magic. */
int proto_decode_option(const uint8_t *buf, size_t len,
                        struct proto_option *opt);

/* Write an option reply header (data follows separately). */
size_t proto_encode_option_reply(uint8_t *buf, uint32_t option,
                                 uint32_t reply_type, uint32_t data_len);

/* Reply to NBD_OPT_EXPORT_NAME: size, flags, and 124 zero bytes unless
 * the client negotiated NO_ZEROES.  Returns 10 or 134. */
size_t proto_encode_export_name_reply(uint8_t *buf, uint64_t size,
                                      uint16_t tflags, bool no_zeroes);

/* NBD_OPT_INFO / NBD_OPT_GO data, pointing into the caller's buffer. */
struct proto_go {
    const uint8_t *name;
    uint32_t name_len;
    uint16_t n_requests;
    const uint8_t *requests;    /* n_requests big-endian 16-bit types */
};

/* Parse INFO/GO option data; -EPROTO when lengths disagree. */
int proto_decode_go(const uint8_t *data, uint32_t len, struct proto_go *go);

/* Info request i of a parsed GO. */
static inline uint16_t proto_go_request(const struct proto_go *go,
                                        uint16_t i)
{
    return proto_get16(go->requests + 2u * i);
}

/* NBD_OPT_LIST_META_CONTEXT / SET_META_CONTEXT data. */
struct proto_meta {
    const uint8_t *name;
    uint32_t name_len;
    uint32_t n_queries;
    const uint8_t *queries;     /* n_queries (length, string) pairs */
    uint32_t queries_len;
};

/* Parse meta-context option data and check every query's length lies
 * inside the option; -EPROTO otherwise. */
int proto_decode_meta(const uint8_t *data, uint32_t len,
                      struct proto_meta *meta);

/* Iterate the queries of a parsed (and therefore valid) meta option.
 * *pos starts at 0; returns false when there are no more. */
bool proto_meta_next(const struct proto_meta *meta, uint32_t *pos,
                     const uint8_t **query, uint32_t *query_len);

#define PROTO_INFO_EXPORT_LEN 12u
#define PROTO_INFO_BLOCK_SIZE_LEN 14u

/* NBD_REP_INFO payloads. */
size_t proto_encode_info_export(uint8_t *buf, uint64_t size, uint16_t tflags);
size_t proto_encode_info_block_size(uint8_t *buf, uint32_t min,
                                    uint32_t pref, uint32_t max);
/* NBD_INFO_NAME / NBD_INFO_DESCRIPTION: type + string; buf holds
 * 2 + len bytes. */
size_t proto_encode_info_string(uint8_t *buf, uint16_t type,
                                const char *s, uint32_t len);
/* NBD_REP_SERVER payload: name length + name (+ no description). */
size_t proto_encode_rep_server(uint8_t *buf, const char *name,
                               uint32_t len);
/* NBD_REP_META_CONTEXT payload: context id + name. */
size_t proto_encode_meta_context(uint8_t *buf, uint32_t id,
                                 const char *name, uint32_t len);

/* ---- transmission ------------------------------------------------- */

struct proto_request {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint64_t length;    /* 32 bits unless extended headers */
};

/* Decode a request header, compact (28 bytes) or extended (32 bytes);
 * returns the header size, -EAGAIN, or -EPROTO on a wrong magic. */
int proto_decode_request(const uint8_t *buf, size_t len, bool extended,
                         struct proto_request *req);

/* Encode a request header (used by the tests' own client). */
size_t proto_encode_request(uint8_t *buf, bool extended,
                            const struct proto_request *req);

/* Simple reply header; returns PROTO_SIMPLE_REPLY_LEN. */
size_t proto_encode_simple_reply(uint8_t *buf, uint64_t cookie,
                                 uint32_t error);

/* Structured (20 bytes) or extended (32 bytes) reply chunk header. */
size_t proto_encode_chunk(uint8_t *buf, bool extended, uint16_t flags,
                          uint16_t type, uint64_t cookie, uint64_t offset,
                          uint64_t payload_len);

/* Chunk payload sizes. */
#define PROTO_OFFSET_DATA_PREFIX 8u     /* offset, then the data */
#define PROTO_OFFSET_HOLE_LEN 12u       /* offset, 32-bit length */
#define PROTO_ERROR_PREFIX 6u           /* error, message length */
#define PROTO_BS_HDR_LEN 4u             /* context id */
#define PROTO_BS_EXT_HDR_LEN 8u         /* context id, count */
#define PROTO_BS_DESC_LEN 8u            /* 32-bit length, 32-bit flags */
#define PROTO_BS_EXT_DESC_LEN 16u       /* 64-bit length, 64-bit flags */

/* NBD_REPLY_TYPE_OFFSET_HOLE payload. */
size_t proto_encode_hole(uint8_t *buf, uint64_t offset, uint32_t length);

/* NBD_REPLY_TYPE_ERROR payload (message truncated to msg_len); an
 * ERROR_OFFSET payload when with_offset. */
size_t proto_encode_error(uint8_t *buf, uint32_t error, const char *msg,
                          uint16_t msg_len, bool with_offset,
                          uint64_t offset);

/* Block status payload prefix: compact (id) or extended (id, count). */
size_t proto_encode_bs_header(uint8_t *buf, bool extended, uint32_t id,
                              uint32_t count);
/* One block status descriptor. */
size_t proto_encode_bs_desc(uint8_t *buf, bool extended, uint64_t length,
                            uint32_t flags);

/* What the server knows about the export and the connection, for
 * request validation. */
struct proto_limits {
    uint64_t export_size;
    uint32_t max_payload;       /* reads and writes */
    uint32_t min_block;         /* advertised alignment; 0 or 1: none */
    uint16_t tflags;            /* transmission flags sent */
    bool structured;            /* structured replies negotiated */
    bool extended;              /* extended headers negotiated */
    bool has_meta;              /* at least one meta context selected */
};

/* Check a decoded request against the protocol: known command, allowed
 * flags, range inside the export, payload bounds.  Returns 0 or a
 * PROTO_E* wire error to send back.  A write whose payload must still be
 * consumed even when refused is signalled by proto_request_payload(). */
uint32_t proto_validate_request(const struct proto_request *req,
                                const struct proto_limits *lim);

/* Bytes of payload that follow this request header on the wire. */
uint64_t proto_request_payload(const struct proto_request *req,
                               bool extended);

/* Map a host errno (positive) to the wire error value. */
uint32_t proto_errno_to_wire(int err);

/* Human names for logs and tests. */
const char *proto_cmd_name(uint16_t type);
const char *proto_opt_name(uint32_t option);

#endif /* DISKSERVE_PROTOCOL_H */
