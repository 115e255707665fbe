/* fuzz-handshake: the input is the byte stream a client sends, from its
 * flags through the options to transmission-phase requests, decoded with
 * protocol/ alone (no sockets, no libuv) the way server/ consumes it.
 *
 * Aborts when a decoder breaks what protocol.h promises: a result other
 * than a length, -EAGAIN or -EPROTO; a length past the bytes given;
 * -EAGAIN when a whole message was there, or a success on a prefix too
 * short to hold it; fields pointing outside the option data; a request
 * validated as in range that is not; an encoder writing past the size
 * its comment gives (ASan).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

#include "fuzz.h"

#define FAIL(...) do {                                   \
        fprintf(stderr, "fuzz-handshake: " __VA_ARGS__); \
        fputc('\n', stderr);                             \
        abort();                                         \
    } while (0)

/* The server caps option data; bigger options end the session. */
#define MAX_OPTION_DATA 65536u
#define EXPORT_SIZE (1024u * 1024u)

/* A decoder's result for len bytes must be a length within len, or
 * -EAGAIN, or -EPROTO. */
static void check_result(const char *what, int r, size_t len)
{
    if (r == -EAGAIN || r == -EPROTO)
        return;
    if (r <= 0 || (size_t)r > len)
        FAIL("%s returned %d for %zu bytes", what, r, len);
}

/* Decode the client flags from every prefix; returns the result for the
 * whole buffer. */
static int client_flags(const uint8_t *p, size_t len, uint16_t offered,
                        uint32_t *flags)
{
    int r = proto_decode_client_flags(p, len, offered, flags);
    check_result("proto_decode_client_flags", r, len);
    for (size_t k = 0; k < len && k < PROTO_CLIENT_FLAGS_LEN; k++) {
        uint32_t f;
        if (proto_decode_client_flags(p, k, offered, &f) != -EAGAIN)
            FAIL("client flags: no -EAGAIN on %zu bytes", k);
    }
    if (r > 0 && (*flags & ~(uint32_t)offered))
        FAIL("client flags 0x%x accepted but 0x%x offered", *flags, offered);
    if (len >= PROTO_CLIENT_FLAGS_LEN && r == -EAGAIN)
        FAIL("client flags: -EAGAIN on %zu bytes", len);
    return r;
}

static int option_header(const uint8_t *p, size_t len,
                         struct proto_option *opt)
{
    int r = proto_decode_option(p, len, opt);
    check_result("proto_decode_option", r, len);
    if (r > 0 && r != PROTO_OPT_HDR_LEN)
        FAIL("option header of %d bytes", r);
    if (len >= PROTO_OPT_HDR_LEN && r == -EAGAIN)
        FAIL("option header: -EAGAIN on %zu bytes", len);
    if (r > 0) {
        for (size_t k = 0; k < (size_t)r; k++) {
            struct proto_option o;
            if (proto_decode_option(p, k, &o) != -EAGAIN)
                FAIL("option header: no -EAGAIN on %zu bytes", k);
        }
    }
    (void)proto_opt_name(opt->option);
    return r;
}

static void within(const char *what, const uint8_t *q, uint64_t qlen,
                   const uint8_t *data, uint32_t len)
{
    if (q < data || q > data + len || qlen > (uint64_t)(data + len - q))
        FAIL("%s: %llu bytes at +%td outside %u bytes of option data", what,
             (unsigned long long)qlen, q - data, len);
}

/* Encode a reply carrying a name taken from the client, into a buffer
 * of exactly the size the encoder documents. */
static void echo_name(const uint8_t *name, uint32_t name_len)
{
    char *s = malloc((size_t)name_len + 1);
    uint8_t *buf = malloc((size_t)name_len + 8);
    if (!s || !buf)
        abort();
    memcpy(s, name, name_len);
    s[name_len] = 0;
    if (proto_encode_info_string(buf, PROTO_INFO_NAME, s, name_len) !=
        2u + name_len)
        FAIL("info string length");
    if (proto_encode_rep_server(buf, s, name_len) != 4u + name_len)
        FAIL("rep server length");
    if (proto_encode_meta_context(buf, 1, s, name_len) != 4u + name_len)
        FAIL("meta context length");
    free(buf);
    free(s);
}

/* Parse GO/INFO data; returns true when it was valid. */
static bool go(const uint8_t *data, uint32_t len)
{
    struct proto_go g;
    int r = proto_decode_go(data, len, &g);
    if (r == -EPROTO)
        return false;
    if (r != 0)
        FAIL("proto_decode_go returned %d", r);
    within("go name", g.name, g.name_len, data, len);
    within("go requests", g.requests, 2ull * g.n_requests, data, len);
    if (g.requests + 2ull * g.n_requests != data + len)
        FAIL("go: requests end before the option data");
    for (uint16_t i = 0; i < g.n_requests; i++)
        (void)proto_go_request(&g, i);
    echo_name(g.name, g.name_len);
    return true;
}

/* Parse meta-context data; returns the number of queries, or -1. */
static long meta(const uint8_t *data, uint32_t len)
{
    struct proto_meta m;
    int r = proto_decode_meta(data, len, &m);
    if (r == -EPROTO)
        return -1;
    if (r != 0)
        FAIL("proto_decode_meta returned %d", r);
    within("meta name", m.name, m.name_len, data, len);
    within("meta queries", m.queries, m.queries_len, data, len);
    uint32_t pos = 0, n = 0;
    const uint8_t *q;
    uint32_t qlen;
    while (proto_meta_next(&m, &pos, &q, &qlen)) {
        within("meta query", q, qlen, data, len);
        if (++n > m.n_queries)
            FAIL("meta: more than %u queries", m.n_queries);
        echo_name(q, qlen);
    }
    if (n != m.n_queries || pos != m.queries_len)
        FAIL("meta: %u of %u queries, stopped at %u of %u", n, m.n_queries,
             pos, m.queries_len);
    return n;
}

/* One request header; returns its size, or <= 0 to stop. */
static int request(const uint8_t *p, size_t len,
                   const struct proto_limits *lim)
{
    struct proto_request req, again;
    bool ext = lim->extended;
    size_t need = ext ? PROTO_EXT_REQUEST_LEN : PROTO_REQUEST_LEN;
    int r = proto_decode_request(p, len, ext, &req);

    check_result("proto_decode_request", r, len);
    if (r > 0 && (size_t)r != need)
        FAIL("request header of %d bytes, expected %zu", r, need);
    if (r == -EAGAIN && len >= need)
        FAIL("request: -EAGAIN on %zu bytes", len);
    if (r <= 0)
        return r;
    for (size_t k = 0; k < need; k++)
        if (proto_decode_request(p, k, ext, &again) == (int)need)
            FAIL("request decoded from %zu bytes", k);

    /* Encoding what was decoded gives the same bytes back. */
    uint8_t buf[PROTO_EXT_REQUEST_LEN];
    if (proto_encode_request(buf, ext, &req) != need ||
        memcmp(buf, p, need) != 0)
        FAIL("request does not round-trip");

    (void)proto_cmd_name(req.type);
    uint32_t err = proto_validate_request(&req, lim);
    if (err == 0 && req.type != PROTO_CMD_FLUSH) {
        if (req.offset > lim->export_size ||
            req.length > lim->export_size - req.offset)
            FAIL("request past the end accepted");
        if ((req.type == PROTO_CMD_READ || req.type == PROTO_CMD_WRITE) &&
            req.length > lim->max_payload)
            FAIL("oversized request accepted");
    }
    if (err == 0 && (req.flags & PROTO_CMD_FLAG_FUA) &&
        !(lim->tflags & PROTO_TFLAG_SEND_FUA))
        FAIL("FUA accepted without SEND_FUA");
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    uint16_t offered = PROTO_FLAG_FIXED_NEWSTYLE | PROTO_FLAG_NO_ZEROES;
    uint32_t cflags;
    struct proto_limits lim = {
        .export_size = EXPORT_SIZE,
        .max_payload = 32u * 1024 * 1024,
        .min_block = 1,
        .tflags = PROTO_TFLAG_HAS_FLAGS | PROTO_TFLAG_SEND_FLUSH |
                  PROTO_TFLAG_SEND_FUA | PROTO_TFLAG_SEND_TRIM |
                  PROTO_TFLAG_SEND_WRITE_ZEROES | PROTO_TFLAG_SEND_DF |
                  PROTO_TFLAG_SEND_CACHE | PROTO_TFLAG_SEND_FAST_ZERO,
    };
    uint8_t greeting[PROTO_GREETING_LEN];
    int r;

    if (proto_encode_greeting(greeting, offered) != PROTO_GREETING_LEN)
        FAIL("greeting length");
    r = client_flags(p, size, offered, &cflags);
    if (r <= 0)
        return 0;
    p += r;

    /* Option phase. */
    bool transmission = false;
    while (!transmission) {
        struct proto_option opt;
        r = option_header(p, (size_t)(end - p), &opt);
        if (r <= 0)
            return 0;
        p += r;
        if (opt.length > MAX_OPTION_DATA || opt.length > (size_t)(end - p))
            return 0;
        const uint8_t *od = p;
        p += opt.length;
        uint8_t reply[PROTO_OPT_REPLY_HDR_LEN + PROTO_EXPORT_NAME_REPLY_LEN];
        proto_encode_option_reply(reply, opt.option, PROTO_REP_ACK,
                                  opt.length);
        switch (opt.option) {
        case PROTO_OPT_EXPORT_NAME:
            echo_name(od, opt.length);
            if (proto_encode_export_name_reply(reply, EXPORT_SIZE, lim.tflags,
                    cflags & PROTO_FLAG_C_NO_ZEROES) !=
                ((cflags & PROTO_FLAG_C_NO_ZEROES) ? 10u
                                                   : PROTO_EXPORT_NAME_REPLY_LEN))
                FAIL("export name reply length");
            transmission = true;
            break;
        case PROTO_OPT_ABORT:
            return 0;
        case PROTO_OPT_INFO:
        case PROTO_OPT_GO:
            if (go(od, opt.length) && opt.option == PROTO_OPT_GO)
                transmission = true;
            break;
        case PROTO_OPT_LIST_META_CONTEXT:
        case PROTO_OPT_SET_META_CONTEXT: {
            long n = meta(od, opt.length);
            if (n > 0 && opt.option == PROTO_OPT_SET_META_CONTEXT &&
                lim.structured)
                lim.has_meta = true;
            break;
        }
        case PROTO_OPT_STRUCTURED_REPLY:
            lim.structured = true;
            break;
        case PROTO_OPT_EXTENDED_HEADERS:
            lim.structured = lim.extended = true;
            break;
        default:
            break;
        }
    }

    /* Transmission phase: headers and the payloads they announce. */
    for (;;) {
        r = request(p, (size_t)(end - p), &lim);
        if (r <= 0)
            return 0;
        struct proto_request req;
        proto_decode_request(p, (size_t)r, lim.extended, &req);
        p += r;
        if (req.type == PROTO_CMD_DISC)
            return 0;
        uint64_t payload = proto_request_payload(&req, lim.extended);
        if (payload > (uint64_t)(end - p))
            return 0;
        p += payload;
    }
}
