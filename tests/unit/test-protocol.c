/* Unit tests for protocol/: every encoder and decoder in protocol.h, fed
 * well-formed messages and each malformed variant the spec warns about,
 * and proto_validate_request() checked against the spec's rules for every
 * command, flag and negotiated state.  Links only libdsproto.a.
 *
 * A failed check prints file:line, the expression, the values and the
 * case being checked, then exits 1.  Random round trips use a seed from
 * DS_TEST_SEED or the clock; it is printed so a failure can be replayed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#include "protocol.h"

/* What is being checked, printed beside a failure in a loop. */
static char check_case[256];

static void set_case(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void set_case(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(check_case, sizeof check_case, fmt, ap);
    va_end(ap);
}

static void __attribute__((noreturn))
check_failed(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    if (check_case[0] != '\0')
        fprintf(stderr, "  case: %s\n", check_case);
    exit(1);
}

static void check_eq(const char *file, int line, const char *expr,
                     int64_t got, int64_t want)
{
    if (got == want)
        return;
    fprintf(stderr, "%s:%d: %s is %" PRId64 " (0x%" PRIx64 "), "
            "expected %" PRId64 " (0x%" PRIx64 ")\n", file, line, expr,
            got, (uint64_t)got, want, (uint64_t)want);
    check_failed(file, line, expr);
}

static void check_bytes(const char *file, int line, const char *expr,
                        const uint8_t *got, const uint8_t *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            fprintf(stderr, "%s:%d: %s: byte %zu is 0x%02x, expected "
                    "0x%02x\n", file, line, expr, i, got[i], want[i]);
            check_failed(file, line, expr);
        }
    }
}

#define CHECK(cond)                                                     \
    do {                                                                \
        if (!(cond))                                                    \
            check_failed(__FILE__, __LINE__, #cond);                    \
    } while (0)
#define CHECK_EQ(got, want)                                             \
    check_eq(__FILE__, __LINE__, #got, (int64_t)(got), (int64_t)(want))
#define CHECK_BYTES(got, want, n)                                       \
    check_bytes(__FILE__, __LINE__, #got, (got), (const uint8_t *)(want), \
                (n))

/* Filler written around encoder output to catch writes past the end. */
#define CANARY 0xa5u

/* Decoders read their input from just before an unmapped page, so a read
 * one byte past the length they were given faults in any build. */
#define FENCE_ROOM (16u * 1024)
static uint8_t *fence_end;
static const uint8_t *fenced;

static void fence_init(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t room = (FENCE_ROOM + page - 1) / page * page;
    uint8_t *map = mmap(NULL, room + page, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (map == MAP_FAILED || mprotect(map + room, page, PROT_NONE) != 0) {
        perror("test-protocol: mmap");
        exit(1);
    }
    fence_end = map + room;
}

/* Copy len bytes so that they end at the unmapped page; returns the copy
 * (also left in 'fenced' for pointer checks). */
static const uint8_t *fence(const uint8_t *src, size_t len)
{
    if (len > FENCE_ROOM) {
        fprintf(stderr, "test-protocol: %zu bytes do not fit the fence\n",
                len);
        exit(1);
    }
    memmove(fence_end - len, src, len);
    fenced = fence_end - len;
    return fenced;
}

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* xorshift64*: enough spread for round-trip inputs. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

/* ---- handshake ----------------------------------------------------- */

static void test_greeting(void)
{
    uint8_t buf[32];
    static const uint8_t want[] = {
        'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C',
        'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T',
        0x00, 0x03,
    };

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_greeting(buf, PROTO_FLAG_FIXED_NEWSTYLE |
                                   PROTO_FLAG_NO_ZEROES), 18);
    CHECK_BYTES(buf, want, sizeof want);
    CHECK_EQ(buf[18], CANARY);

    proto_encode_greeting(buf, PROTO_FLAG_FIXED_NEWSTYLE);
    CHECK_EQ(buf[16], 0x00);
    CHECK_EQ(buf[17], 0x01);
}

static int decode_flags(uint32_t value, size_t len, uint16_t offered,
                        uint32_t *flags)
{
    uint8_t buf[4];

    proto_put32(buf, value);
    return proto_decode_client_flags(fence(buf, len), len, offered, flags);
}

static void test_client_flags(void)
{
    const uint16_t both = PROTO_FLAG_FIXED_NEWSTYLE | PROTO_FLAG_NO_ZEROES;
    uint32_t flags;

    for (size_t len = 0; len < 4; len++) {
        set_case("client flags, %zu bytes", len);
        CHECK_EQ(decode_flags(PROTO_FLAG_C_FIXED_NEWSTYLE, len, both,
                              &flags), -EAGAIN);
    }
    check_case[0] = '\0';

    flags = 0xdead;
    CHECK_EQ(decode_flags(0, 4, both, &flags), 4);
    CHECK_EQ(flags, 0);
    CHECK_EQ(decode_flags(PROTO_FLAG_C_FIXED_NEWSTYLE, 4, both, &flags), 4);
    CHECK_EQ(flags, PROTO_FLAG_C_FIXED_NEWSTYLE);
    CHECK_EQ(decode_flags(PROTO_FLAG_C_FIXED_NEWSTYLE |
                          PROTO_FLAG_C_NO_ZEROES, 4, both, &flags), 4);
    CHECK_EQ(flags, PROTO_FLAG_C_FIXED_NEWSTYLE | PROTO_FLAG_C_NO_ZEROES);

    /* NO_ZEROES when the server did not offer it: the spec says drop. */
    CHECK_EQ(decode_flags(PROTO_FLAG_C_FIXED_NEWSTYLE |
                          PROTO_FLAG_C_NO_ZEROES, 4,
                          PROTO_FLAG_FIXED_NEWSTYLE, &flags), -EPROTO);
    CHECK_EQ(decode_flags(PROTO_FLAG_C_FIXED_NEWSTYLE, 4,
                          PROTO_FLAG_FIXED_NEWSTYLE, &flags), 4);

    /* Every bit the spec does not define is refused on its own and
     * beside the known ones. */
    for (unsigned bit = 2; bit < 32; bit++) {
        set_case("unknown client flag bit %u", bit);
        CHECK_EQ(decode_flags(1u << bit, 4, both, &flags), -EPROTO);
        CHECK_EQ(decode_flags((1u << bit) | PROTO_FLAG_C_KNOWN, 4, both,
                              &flags), -EPROTO);
    }
    check_case[0] = '\0';
    CHECK_EQ(decode_flags(0xffffffffu, 4, 0xffff, &flags), -EPROTO);
}

static void put_option(uint8_t *buf, uint64_t magic, uint32_t option,
                       uint32_t length)
{
    proto_put64(buf, magic);
    proto_put32(buf + 8, option);
    proto_put32(buf + 12, length);
}

static void test_option_header(void)
{
    uint8_t buf[PROTO_OPT_HDR_LEN + 4];
    struct proto_option opt;

    put_option(buf, PROTO_IHAVEOPT, PROTO_OPT_GO, 0x01020304);
    memset(buf + PROTO_OPT_HDR_LEN, 0, 4);
    CHECK_EQ(proto_decode_option(fence(buf, sizeof buf), sizeof buf, &opt), 16);
    CHECK_EQ(opt.option, PROTO_OPT_GO);
    CHECK_EQ(opt.length, 0x01020304);

    /* The decoder does not judge the length: the caller's limit does. */
    put_option(buf, PROTO_IHAVEOPT, 0xfffffffeu, 0xffffffffu);
    CHECK_EQ(proto_decode_option(fence(buf, 16), 16, &opt), 16);
    CHECK_EQ(opt.option, 0xfffffffeu);
    CHECK_EQ(opt.length, 0xffffffffu);

    for (size_t len = 0; len < PROTO_OPT_HDR_LEN; len++) {
        set_case("option header, %zu bytes", len);
        CHECK_EQ(proto_decode_option(fence(buf, len), len, &opt), -EAGAIN);
    }

    /* Any single wrong bit in the magic is fatal. */
    for (unsigned bit = 0; bit < 64; bit++) {
        set_case("option magic with bit %u flipped", bit);
        put_option(buf, PROTO_IHAVEOPT ^ (1ULL << bit), PROTO_OPT_GO, 0);
        CHECK_EQ(proto_decode_option(fence(buf, 16), 16, &opt), -EPROTO);
    }
    check_case[0] = '\0';
    put_option(buf, PROTO_INIT_PASSWD, PROTO_OPT_GO, 0);
    CHECK_EQ(proto_decode_option(fence(buf, 16), 16, &opt), -EPROTO);
    put_option(buf, PROTO_OPT_REPLY_MAGIC, PROTO_OPT_GO, 0);
    CHECK_EQ(proto_decode_option(fence(buf, 16), 16, &opt), -EPROTO);
}

static void test_option_reply(void)
{
    uint8_t buf[24];
    static const uint8_t want[] = {
        0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9,
        0x00, 0x00, 0x00, 0x07,
        0x80, 0x00, 0x00, 0x03,
        0x00, 0x00, 0x01, 0x02,
    };

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_option_reply(buf, PROTO_OPT_GO,
                                       PROTO_REP_ERR_INVALID, 0x102), 20);
    CHECK_BYTES(buf, want, sizeof want);
    CHECK_EQ(buf[20], CANARY);
}

static void test_export_name_reply(void)
{
    uint8_t buf[PROTO_EXPORT_NAME_REPLY_LEN + 4];
    static const uint8_t head[] = {
        0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
        0x01, 0x4d,
    };
    static const uint8_t zeroes[124];

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_export_name_reply(buf, 0x010203040506ULL, 0x14d,
                                            false), 134);
    CHECK_BYTES(buf, head, sizeof head);
    CHECK_BYTES(buf + 10, zeroes, sizeof zeroes);
    CHECK_EQ(buf[134], CANARY);

    /* NO_ZEROES negotiated: nothing after the flags. */
    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_export_name_reply(buf, 0x010203040506ULL, 0x14d,
                                            true), 10);
    CHECK_BYTES(buf, head, sizeof head);
    CHECK_EQ(buf[10], CANARY);
}

/* Build GO/INFO data: name, then n_requests as counted on the wire and
 * the requests actually present (they may disagree on purpose). */
static uint32_t build_go(uint8_t *buf, uint32_t name_len_field,
                         const char *name, uint32_t name_len,
                         uint16_t count_field, const uint16_t *reqs,
                         uint16_t n_reqs)
{
    uint32_t n = 0;

    proto_put32(buf, name_len_field);
    n += 4;
    memcpy(buf + n, name, name_len);
    n += name_len;
    proto_put16(buf + n, count_field);
    n += 2;
    for (uint16_t i = 0; i < n_reqs; i++, n += 2)
        proto_put16(buf + n, reqs[i]);
    return n;
}

static void test_decode_go(void)
{
    static uint8_t buf[8192];
    static char big[4096];
    const uint16_t reqs[] = { PROTO_INFO_NAME, PROTO_INFO_BLOCK_SIZE,
                              0xbeef };
    struct proto_go go;
    uint32_t len;

    len = build_go(buf, 4, "disk", 4, 3, reqs, 3);
    CHECK_EQ(len, 16);
    CHECK_EQ(proto_decode_go(fence(buf, len), len, &go), 0);
    CHECK_EQ(go.name_len, 4);
    CHECK(go.name == fenced + 4);
    CHECK(memcmp(go.name, "disk", 4) == 0);
    CHECK_EQ(go.n_requests, 3);
    CHECK_EQ(proto_go_request(&go, 0), PROTO_INFO_NAME);
    CHECK_EQ(proto_go_request(&go, 1), PROTO_INFO_BLOCK_SIZE);
    CHECK_EQ(proto_go_request(&go, 2), 0xbeef);

    /* The default export with no information requests: 6 bytes. */
    len = build_go(buf, 0, "", 0, 0, NULL, 0);
    CHECK_EQ(len, 6);
    CHECK_EQ(proto_decode_go(fence(buf, len), len, &go), 0);
    CHECK_EQ(go.name_len, 0);
    CHECK_EQ(go.n_requests, 0);

    /* Too short to hold even the two length fields. */
    for (uint32_t l = 0; l < 6; l++) {
        set_case("GO data of %" PRIu32 " bytes", l);
        CHECK_EQ(proto_decode_go(fence(buf, l), l, &go), -EPROTO);
    }
    check_case[0] = '\0';

    /* Name length past the end: the spec's "no larger than length - 6". */
    len = build_go(buf, 5, "disk", 4, 0, NULL, 0);
    CHECK_EQ(proto_decode_go(fence(buf, len), len, &go), -EPROTO);
    len = build_go(buf, 0xffffffffu, "disk", 4, 0, NULL, 0);
    CHECK_EQ(proto_decode_go(fence(buf, len), len, &go), -EPROTO);
    len = build_go(buf, 0xfffffffcu, "disk", 4, 0, NULL, 0);
    CHECK_EQ(proto_decode_go(fence(buf, len), len, &go), -EPROTO);
    /* Name length that swallows the count field. */
    len = build_go(buf, 6, "disk", 4, 0, NULL, 0);
    CHECK_EQ(proto_decode_go(fence(buf, len), len, &go), -EPROTO);

    /* Count larger, then smaller, than the requests present. */
    len = build_go(buf, 4, "disk", 4, 4, reqs, 3);
    CHECK_EQ(proto_decode_go(fence(buf, len), len, &go), -EPROTO);
    len = build_go(buf, 4, "disk", 4, 2, reqs, 3);
    CHECK_EQ(proto_decode_go(fence(buf, len), len, &go), -EPROTO);
    len = build_go(buf, 4, "disk", 4, 0xffff, reqs, 3);
    CHECK_EQ(proto_decode_go(fence(buf, len), len, &go), -EPROTO);

    /* A trailing byte after a well-formed message. */
    len = build_go(buf, 4, "disk", 4, 3, reqs, 3);
    buf[len] = 0;
    CHECK_EQ(proto_decode_go(fence(buf, len + 1), len + 1, &go), -EPROTO);
    /* An odd byte where a request should be. */
    CHECK_EQ(proto_decode_go(fence(buf, len - 1), len - 1, &go), -EPROTO);

    /* The longest name the spec allows. */
    memset(big, 'n', sizeof big);
    len = build_go(buf, sizeof big, big, sizeof big, 1, reqs, 1);
    CHECK_EQ(len, 4 + 4096 + 2 + 2);
    CHECK_EQ(proto_decode_go(fence(buf, len), len, &go), 0);
    CHECK_EQ(go.name_len, 4096);
    CHECK(go.name == fenced + 4);
    CHECK_EQ(go.n_requests, 1);
    CHECK_EQ(proto_go_request(&go, 0), PROTO_INFO_NAME);
}

struct query {
    uint32_t len_field;
    const char *s;
};

/* Build meta-context option data from a name, a count field and the
 * queries actually present. */
static uint32_t build_meta(uint8_t *buf, const char *name,
                           uint32_t count_field, const struct query *q,
                           uint32_t n_q)
{
    uint32_t n = 0;
    uint32_t name_len = (uint32_t)strlen(name);

    proto_put32(buf, name_len);
    n += 4;
    memcpy(buf + n, name, name_len);
    n += name_len;
    proto_put32(buf + n, count_field);
    n += 4;
    for (uint32_t i = 0; i < n_q; i++) {
        uint32_t sl = (uint32_t)strlen(q[i].s);
        proto_put32(buf + n, q[i].len_field);
        n += 4;
        memcpy(buf + n, q[i].s, sl);
        n += sl;
    }
    return n;
}

static void test_decode_meta(void)
{
    uint8_t buf[512];
    const struct query two[] = {
        { 15, "base:allocation" },
        { 21, "qemu:allocation-depth" },
    };
    struct proto_meta meta;
    const uint8_t *q;
    uint32_t qlen, pos, len;

    len = build_meta(buf, "disk", 2, two, 2);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), 0);
    CHECK_EQ(meta.name_len, 4);
    CHECK(meta.name == fenced + 4);
    CHECK(memcmp(meta.name, "disk", 4) == 0);
    CHECK_EQ(meta.n_queries, 2);
    pos = 0;
    CHECK(proto_meta_next(&meta, &pos, &q, &qlen));
    CHECK_EQ(qlen, 15);
    CHECK(memcmp(q, "base:allocation", 15) == 0);
    CHECK(proto_meta_next(&meta, &pos, &q, &qlen));
    CHECK_EQ(qlen, 21);
    CHECK(memcmp(q, "qemu:allocation-depth", 21) == 0);
    CHECK(q + qlen == fenced + len);
    CHECK(!proto_meta_next(&meta, &pos, &q, &qlen));

    /* Zero queries: valid (LIST means all, SET means none). */
    len = build_meta(buf, "", 0, NULL, 0);
    CHECK_EQ(len, 8);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), 0);
    CHECK_EQ(meta.name_len, 0);
    CHECK_EQ(meta.n_queries, 0);
    pos = 0;
    CHECK(!proto_meta_next(&meta, &pos, &q, &qlen));

    /* An empty query string is still one query. */
    const struct query empty[] = { { 0, "" } };
    len = build_meta(buf, "", 1, empty, 1);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), 0);
    CHECK_EQ(meta.n_queries, 1);
    pos = 0;
    CHECK(proto_meta_next(&meta, &pos, &q, &qlen));
    CHECK_EQ(qlen, 0);
    CHECK(!proto_meta_next(&meta, &pos, &q, &qlen));

    for (uint32_t l = 0; l < 8; l++) {
        set_case("meta data of %" PRIu32 " bytes", l);
        CHECK_EQ(proto_decode_meta(fence(buf, l), l, &meta), -EPROTO);
    }
    check_case[0] = '\0';

    /* Export name length past the end. */
    len = build_meta(buf, "disk", 0, NULL, 0);
    proto_put32(buf, 5);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), -EPROTO);
    proto_put32(buf, 0xffffffffu);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), -EPROTO);
    proto_put32(buf, 0xfffffff8u);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), -EPROTO);

    /* Query length reaching one byte past the end, and far past it. */
    const struct query long1[] = {
        { 15, "base:allocation" }, { 22, "qemu:allocation-depth" },
    };
    len = build_meta(buf, "disk", 2, long1, 2);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), -EPROTO);
    const struct query huge[] = { { 0xffffffffu, "base:allocation" } };
    len = build_meta(buf, "disk", 1, huge, 1);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), -EPROTO);
    const struct query wrap[] = { { 0xfffffffcu, "base:allocation" } };
    len = build_meta(buf, "disk", 1, wrap, 1);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), -EPROTO);

    /* More queries counted than present; a huge count must fail fast. */
    len = build_meta(buf, "disk", 3, two, 2);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), -EPROTO);
    len = build_meta(buf, "disk", 0xffffffffu, two, 2);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), -EPROTO);

    /* Fewer counted than present: the rest is trailing garbage. */
    len = build_meta(buf, "disk", 1, two, 2);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), -EPROTO);
    len = build_meta(buf, "disk", 0, two, 1);
    CHECK_EQ(proto_decode_meta(fence(buf, len), len, &meta), -EPROTO);
    len = build_meta(buf, "disk", 2, two, 2);
    memcpy(buf + len, "xyz", 3);
    CHECK_EQ(proto_decode_meta(fence(buf, len + 1), len + 1, &meta), -EPROTO);
    CHECK_EQ(proto_decode_meta(fence(buf, len + 3), len + 3, &meta), -EPROTO);
    /* A query length field cut short. */
    len = build_meta(buf, "disk", 1, NULL, 0);
    memset(buf + len, 0, 3);
    CHECK_EQ(proto_decode_meta(fence(buf, len + 3), len + 3, &meta), -EPROTO);
}

static void test_info_encoders(void)
{
    uint8_t buf[64];

    static const uint8_t export[] = {
        0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x04, 0x4f,
    };
    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_info_export(buf, 1ULL << 32, 0x44f), 12);
    CHECK_BYTES(buf, export, sizeof export);
    CHECK_EQ(buf[12], CANARY);

    static const uint8_t bsize[] = {
        0x00, 0x03,
        0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x10, 0x00,
        0x02, 0x00, 0x00, 0x00,
    };
    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_info_block_size(buf, 1, 4096, 32u << 20), 14);
    CHECK_BYTES(buf, bsize, sizeof bsize);
    CHECK_EQ(buf[14], CANARY);

    static const uint8_t name[] = { 0x00, 0x01, 'a', 'b', 'c' };
    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_info_string(buf, PROTO_INFO_NAME, "abcdef", 3),
             5);
    CHECK_BYTES(buf, name, sizeof name);
    CHECK_EQ(buf[5], CANARY);

    static const uint8_t descr[] = { 0x00, 0x02 };
    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_info_string(buf, PROTO_INFO_DESCRIPTION, "", 0),
             2);
    CHECK_BYTES(buf, descr, sizeof descr);
    CHECK_EQ(buf[2], CANARY);

    static const uint8_t server[] = { 0, 0, 0, 4, 'd', 'i', 's', 'k' };
    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_rep_server(buf, "disk", 4), 8);
    CHECK_BYTES(buf, server, sizeof server);
    CHECK_EQ(buf[8], CANARY);
    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_rep_server(buf, "", 0), 4);
    CHECK_BYTES(buf, server, 3);
    CHECK_EQ(buf[3], 0);
    CHECK_EQ(buf[4], CANARY);

    static const uint8_t ctx[] = {
        0x12, 0x34, 0x56, 0x78, 'b', 'a', 's', 'e', ':',
        'a', 'l', 'l', 'o', 'c', 'a', 't', 'i', 'o', 'n',
    };
    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_meta_context(buf, 0x12345678, "base:allocation",
                                       15), 19);
    CHECK_BYTES(buf, ctx, sizeof ctx);
    CHECK_EQ(buf[19], CANARY);
}

/* ---- transmission -------------------------------------------------- */

/* proto_decode_request() on a fenced copy of buf. */
static int decode_req(const uint8_t *buf, size_t len, bool extended,
                      struct proto_request *req)
{
    return proto_decode_request(fence(buf, len), len, extended, req);
}

static void test_decode_request_compact(void)
{
    uint8_t buf[PROTO_EXT_REQUEST_LEN];
    static const uint8_t wire[] = {
        0x25, 0x60, 0x95, 0x13,
        0x00, 0x05,
        0x00, 0x01,
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x10, 0x00,
        0xff, 0xff, 0xff, 0xff,
    };
    struct proto_request req;

    memcpy(buf, wire, sizeof wire);
    memset(&req, 0, sizeof req);
    CHECK_EQ(decode_req(buf, sizeof wire, false, &req), 28);
    CHECK_EQ(req.flags, 5);
    CHECK_EQ(req.type, PROTO_CMD_WRITE);
    CHECK_EQ(req.cookie, 0x0102030405060708ULL);
    CHECK_EQ(req.offset, 0x100001000ULL);
    CHECK_EQ(req.length, 0xffffffffu);

    /* Extra bytes after the header are not the decoder's business. */
    buf[28] = 0xee;
    CHECK_EQ(decode_req(buf, 29, false, &req), 28);

    for (size_t len = 0; len < PROTO_REQUEST_LEN; len++) {
        set_case("compact request, %zu bytes", len);
        CHECK_EQ(decode_req(buf, len, false, &req), -EAGAIN);
    }
    check_case[0] = '\0';

    /* The extended magic is wrong on a compact connection. */
    proto_put32(buf, PROTO_EXT_REQUEST_MAGIC);
    CHECK_EQ(decode_req(buf, 28, false, &req), -EPROTO);
    for (unsigned bit = 0; bit < 32; bit++) {
        set_case("compact request magic with bit %u flipped", bit);
        proto_put32(buf, PROTO_REQUEST_MAGIC ^ (1u << bit));
        CHECK_EQ(decode_req(buf, 28, false, &req), -EPROTO);
    }
    check_case[0] = '\0';
    proto_put32(buf, PROTO_SIMPLE_REPLY_MAGIC);
    CHECK_EQ(decode_req(buf, 28, false, &req), -EPROTO);
}

static void test_decode_request_extended(void)
{
    uint8_t buf[PROTO_EXT_REQUEST_LEN + 1];
    static const uint8_t wire[] = {
        0x21, 0xe4, 0x1c, 0x71,
        0x00, 0x20,
        0x00, 0x06,
        0xf0, 0xe0, 0xd0, 0xc0, 0xb0, 0xa0, 0x90, 0x80,
        0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,
    };
    struct proto_request req;

    memcpy(buf, wire, sizeof wire);
    memset(&req, 0, sizeof req);
    CHECK_EQ(decode_req(buf, sizeof wire, true, &req), 32);
    CHECK_EQ(req.flags, PROTO_CMD_FLAG_PAYLOAD_LEN);
    CHECK_EQ(req.type, PROTO_CMD_WRITE_ZEROES);
    CHECK_EQ(req.cookie, 0xf0e0d0c0b0a09080ULL);
    CHECK_EQ(req.offset, 0x200000000ULL);
    CHECK_EQ(req.length, 0x100000001ULL);

    for (size_t len = 0; len < PROTO_EXT_REQUEST_LEN; len++) {
        set_case("extended request, %zu bytes", len);
        CHECK_EQ(decode_req(buf, len, true, &req), -EAGAIN);
    }
    check_case[0] = '\0';

    /* The compact magic is wrong once extended headers are on. */
    proto_put32(buf, PROTO_REQUEST_MAGIC);
    CHECK_EQ(decode_req(buf, 32, true, &req), -EPROTO);
    for (unsigned bit = 0; bit < 32; bit++) {
        set_case("extended request magic with bit %u flipped", bit);
        proto_put32(buf, PROTO_EXT_REQUEST_MAGIC ^ (1u << bit));
        CHECK_EQ(decode_req(buf, 32, true, &req), -EPROTO);
    }
    check_case[0] = '\0';
    proto_put32(buf, PROTO_EXT_REPLY_MAGIC);
    CHECK_EQ(decode_req(buf, 32, true, &req), -EPROTO);
}

static void test_request_round_trip(void)
{
    uint8_t buf[PROTO_EXT_REQUEST_LEN + 1];

    for (int i = 0; i < 20000; i++) {
        bool ext = i & 1;
        struct proto_request in = {
            .flags = (uint16_t)rng_next(),
            .type = (uint16_t)rng_next(),
            .cookie = rng_next(),
            .offset = rng_next(),
            .length = rng_next(),
        };
        struct proto_request out;
        size_t want = ext ? PROTO_EXT_REQUEST_LEN : PROTO_REQUEST_LEN;

        if (!ext)
            in.length &= 0xffffffffu;
        set_case("round trip %d (%s)", i, ext ? "extended" : "compact");
        memset(buf, CANARY, sizeof buf);
        CHECK_EQ(proto_encode_request(buf, ext, &in), want);
        CHECK_EQ(buf[want], CANARY);
        memset(&out, 0, sizeof out);
        CHECK_EQ(decode_req(buf, want, ext, &out), (int)want);
        CHECK_EQ(out.flags, in.flags);
        CHECK_EQ(out.type, in.type);
        CHECK_EQ(out.cookie, in.cookie);
        CHECK_EQ(out.offset, in.offset);
        CHECK_EQ(out.length, in.length);
        /* Decoded in the other mode, the magic is wrong. */
        CHECK_EQ(decode_req(buf, want, !ext, &out), -EPROTO);
    }
    check_case[0] = '\0';
}

static void test_simple_reply(void)
{
    uint8_t buf[20];
    static const uint8_t want[] = {
        0x67, 0x44, 0x66, 0x98,
        0x00, 0x00, 0x00, 0x16,
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
    };

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_simple_reply(buf, 0x8877665544332211ULL,
                                       PROTO_EINVAL), 16);
    CHECK_BYTES(buf, want, sizeof want);
    CHECK_EQ(buf[16], CANARY);
}

static void test_chunk_headers(void)
{
    uint8_t buf[40];
    static const uint8_t compact[] = {
        0x66, 0x8e, 0x33, 0xef,
        0x00, 0x01,
        0x00, 0x02,
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        0x00, 0x00, 0x00, 0x0c,
    };
    static const uint8_t extended[] = {
        0x6e, 0x8a, 0x27, 0x8c,
        0x00, 0x01,
        0x00, 0x06,
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x18,
    };

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_chunk(buf, false, PROTO_REPLY_FLAG_DONE,
                                PROTO_REPLY_TYPE_OFFSET_HOLE,
                                0x0102030405060708ULL, 0xabc, 12), 20);
    CHECK_BYTES(buf, compact, sizeof compact);
    CHECK_EQ(buf[20], CANARY);

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_chunk(buf, true, PROTO_REPLY_FLAG_DONE,
                                PROTO_REPLY_TYPE_BLOCK_STATUS_EXT,
                                0x0102030405060708ULL, 1ULL << 40,
                                0x200000018ULL), 32);
    CHECK_BYTES(buf, extended, sizeof extended);
    CHECK_EQ(buf[32], CANARY);

    /* The error type keeps bit 15 on the wire. */
    proto_encode_chunk(buf, false, 0, PROTO_REPLY_TYPE_ERROR_OFFSET, 0, 0,
                       14);
    CHECK_EQ(proto_get16(buf + 6), 0x8002);
    CHECK(PROTO_REPLY_TYPE_IS_ERR(proto_get16(buf + 6)));
    CHECK(!PROTO_REPLY_TYPE_IS_ERR(PROTO_REPLY_TYPE_BLOCK_STATUS_EXT));
}

static void test_hole(void)
{
    uint8_t buf[16];
    static const uint8_t want[] = {
        0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x02, 0x00,
        0x00, 0x10, 0x00, 0x00,
    };

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_hole(buf, 0x1000000200ULL, 0x100000), 12);
    CHECK_BYTES(buf, want, sizeof want);
    CHECK_EQ(buf[12], CANARY);
}

static void test_error_payload(void)
{
    uint8_t buf[40];
    static const uint8_t plain[] = {
        0x00, 0x00, 0x00, 0x05,
        0x00, 0x03,
        'b', 'a', 'd',
    };
    static const uint8_t with_off[] = {
        0x00, 0x00, 0x00, 0x1c,
        0x00, 0x02,
        'n', 'o',
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
    };
    static const uint8_t empty_off[] = {
        0x00, 0x00, 0x00, 0x16,
        0x00, 0x00,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    };

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_error(buf, PROTO_EIO, "badness", 3, false, 77),
             9);
    CHECK_BYTES(buf, plain, sizeof plain);
    CHECK_EQ(buf[9], CANARY);

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_error(buf, PROTO_ENOSPC, "no", 2, true, 0x10000),
             16);
    CHECK_BYTES(buf, with_off, sizeof with_off);
    CHECK_EQ(buf[16], CANARY);

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_error(buf, PROTO_EINVAL, "", 0, false, 0), 6);
    CHECK_BYTES(buf, empty_off, 6);
    CHECK_EQ(buf[6], CANARY);

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_error(buf, PROTO_EINVAL, "", 0, true,
                                UINT64_MAX), 14);
    CHECK_BYTES(buf, empty_off, sizeof empty_off);
    CHECK_EQ(buf[14], CANARY);
}

static void test_block_status_payload(void)
{
    uint8_t buf[24];
    static const uint8_t hdr_compact[] = { 0x00, 0x00, 0x00, 0x02 };
    static const uint8_t hdr_ext[] = {
        0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00,
    };
    static const uint8_t desc_compact[] = {
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
    };
    static const uint8_t desc_ext[] = {
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x03,
    };

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_bs_header(buf, false, 2, 0x10000), 4);
    CHECK_BYTES(buf, hdr_compact, sizeof hdr_compact);
    CHECK_EQ(buf[4], CANARY);

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_bs_header(buf, true, 2, 0x10000), 8);
    CHECK_BYTES(buf, hdr_ext, sizeof hdr_ext);
    CHECK_EQ(buf[8], CANARY);

    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_bs_desc(buf, false, 0x10000, 3), 8);
    CHECK_BYTES(buf, desc_compact, sizeof desc_compact);
    CHECK_EQ(buf[8], CANARY);

    /* Extended descriptors carry 64-bit lengths; flags zero-extend. */
    memset(buf, CANARY, sizeof buf);
    CHECK_EQ(proto_encode_bs_desc(buf, true, 1ULL << 32, 0x80000003u), 16);
    CHECK_BYTES(buf, desc_ext, sizeof desc_ext);
    CHECK_EQ(buf[16], CANARY);
}

static void test_request_payload(void)
{
    struct proto_request req = {
        .type = PROTO_CMD_WRITE, .length = 4096,
    };

    CHECK_EQ(proto_request_payload(&req, false), 4096);
    CHECK_EQ(proto_request_payload(&req, true), 4096);
    req.flags = PROTO_CMD_FLAG_PAYLOAD_LEN;
    CHECK_EQ(proto_request_payload(&req, true), 4096);

    /* Commands without data carry none, unless an extended header says
     * so with PAYLOAD_LEN. */
    const uint16_t others[] = {
        PROTO_CMD_READ, PROTO_CMD_DISC, PROTO_CMD_FLUSH, PROTO_CMD_TRIM,
        PROTO_CMD_CACHE, PROTO_CMD_WRITE_ZEROES, PROTO_CMD_BLOCK_STATUS,
        99,
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        set_case("payload of %s", proto_cmd_name(others[i]));
        req.type = others[i];
        req.length = 1ULL << 33;
        req.flags = 0;
        CHECK_EQ(proto_request_payload(&req, false), 0);
        CHECK_EQ(proto_request_payload(&req, true), 0);
        req.flags = PROTO_CMD_FLAG_PAYLOAD_LEN;
        CHECK_EQ(proto_request_payload(&req, false), 0);
        CHECK_EQ(proto_request_payload(&req, true), 1ULL << 33);
    }
    check_case[0] = '\0';
}

/* ---- request validation ------------------------------------------- */

#define KIB 1024ULL
#define MIB (1024ULL * 1024)
#define GIB (1024ULL * 1024 * 1024)

/* A consistent negotiated state: the server sets SEND_DF only with
 * structured replies, and extended headers imply structured replies. */
static struct proto_limits make_limits(bool read_only, bool structured,
                                       bool extended, bool has_meta,
                                       uint16_t optional_tflags)
{
    struct proto_limits lim = {
        .export_size = 64 * MIB,
        .max_payload = PROTO_MAX_PAYLOAD,
        .tflags = PROTO_TFLAG_HAS_FLAGS | optional_tflags,
        .structured = structured || extended,
        .extended = extended,
        .has_meta = has_meta,
    };

    if (read_only)
        lim.tflags |= PROTO_TFLAG_READ_ONLY;
    if (lim.structured)
        lim.tflags |= PROTO_TFLAG_SEND_DF;
    return lim;
}

static const uint16_t known_cmds[] = {
    PROTO_CMD_READ, PROTO_CMD_WRITE, PROTO_CMD_FLUSH, PROTO_CMD_TRIM,
    PROTO_CMD_CACHE, PROTO_CMD_WRITE_ZEROES, PROTO_CMD_BLOCK_STATUS,
};
#define N_KNOWN_CMDS (sizeof known_cmds / sizeof known_cmds[0])

/* The transmission flags a server may advertise or not. */
static const uint16_t optional_tflags[] = {
    PROTO_TFLAG_SEND_FLUSH, PROTO_TFLAG_SEND_FUA, PROTO_TFLAG_SEND_TRIM,
    PROTO_TFLAG_SEND_WRITE_ZEROES, PROTO_TFLAG_SEND_CACHE,
    PROTO_TFLAG_SEND_FAST_ZERO,
};
#define N_OPTIONAL_TFLAGS (sizeof optional_tflags / sizeof optional_tflags[0])

static uint16_t all_optional_tflags(void)
{
    uint16_t t = 0;

    for (size_t i = 0; i < N_OPTIONAL_TFLAGS; i++)
        t |= optional_tflags[i];
    return t;
}

/* The spec, read independently of protocol.c: whether the server may run
 * this command at all on this connection. */
static bool spec_command_usable(uint16_t cmd, const struct proto_limits *l)
{
    switch (cmd) {
    case PROTO_CMD_READ:
    case PROTO_CMD_WRITE:
        return true;
    case PROTO_CMD_FLUSH:
        return l->tflags & PROTO_TFLAG_SEND_FLUSH;
    case PROTO_CMD_TRIM:
        return l->tflags & PROTO_TFLAG_SEND_TRIM;
    case PROTO_CMD_CACHE:
        return l->tflags & PROTO_TFLAG_SEND_CACHE;
    case PROTO_CMD_WRITE_ZEROES:
        return l->tflags & PROTO_TFLAG_SEND_WRITE_ZEROES;
    case PROTO_CMD_BLOCK_STATUS:
        return l->structured && l->has_meta;
    default:
        return false;
    }
}

/* The spec: whether one command flag is documented for this command
 * under what was negotiated. */
static bool spec_flag_allowed(uint16_t cmd, uint16_t flag,
                              const struct proto_limits *l)
{
    switch (flag) {
    case PROTO_CMD_FLAG_FUA:
        return l->tflags & PROTO_TFLAG_SEND_FUA;
    case PROTO_CMD_FLAG_NO_HOLE:
        return cmd == PROTO_CMD_WRITE_ZEROES;
    case PROTO_CMD_FLAG_DF:
        return cmd == PROTO_CMD_READ && (l->tflags & PROTO_TFLAG_SEND_DF);
    case PROTO_CMD_FLAG_REQ_ONE:
        return cmd == PROTO_CMD_BLOCK_STATUS;
    case PROTO_CMD_FLAG_FAST_ZERO:
        return cmd == PROTO_CMD_WRITE_ZEROES &&
               (l->tflags & PROTO_TFLAG_SEND_FAST_ZERO);
    case PROTO_CMD_FLAG_PAYLOAD_LEN:
        return cmd == PROTO_CMD_WRITE && l->extended;
    default:
        return false;
    }
}

static bool is_write(uint16_t cmd)
{
    return cmd == PROTO_CMD_WRITE || cmd == PROTO_CMD_TRIM ||
           cmd == PROTO_CMD_WRITE_ZEROES;
}

/* Every command x every single flag bit (and none) x read-only x
 * structured x extended x meta x each optional transmission flag on or
 * off, for an in-range request.  Where two errors apply (a bad flag on a
 * write to a read-only export) either answer is correct. */
static void test_validate_matrix(void)
{
    const unsigned n_tsets = 1u << N_OPTIONAL_TFLAGS;
    unsigned checked = 0;

    for (unsigned state = 0; state < 16; state++) {
        bool ro = state & 1, sr = state & 2, ext = state & 4,
             meta = state & 8;
        for (unsigned ts = 0; ts < n_tsets; ts++) {
            uint16_t opt = 0;
            for (size_t b = 0; b < N_OPTIONAL_TFLAGS; b++)
                if (ts & (1u << b))
                    opt |= optional_tflags[b];
            struct proto_limits lim = make_limits(ro, sr, ext, meta, opt);
            for (size_t c = 0; c < N_KNOWN_CMDS; c++) {
                uint16_t cmd = known_cmds[c];
                for (int bit = -1; bit < 16; bit++) {
                    uint16_t flag = bit < 0 ? 0 : (uint16_t)(1u << bit);
                    struct proto_request req = {
                        .type = cmd, .flags = flag, .cookie = 1,
                        .offset = 4 * KIB, .length = 4 * KIB,
                    };
                    bool bad = !spec_command_usable(cmd, &lim) ||
                               (flag && !spec_flag_allowed(cmd, flag, &lim));
                    bool ro_write = ro && is_write(cmd);
                    uint32_t got = proto_validate_request(&req, &lim);

                    set_case("%s flags 0x%x ro=%d structured=%d "
                             "extended=%d meta=%d tflags=0x%x",
                             proto_cmd_name(cmd), flag, ro, lim.structured,
                             ext, meta, lim.tflags);
                    if (bad && ro_write)
                        CHECK(got == PROTO_EINVAL || got == PROTO_EPERM);
                    else if (bad)
                        CHECK_EQ(got, PROTO_EINVAL);
                    else if (ro_write)
                        CHECK_EQ(got, PROTO_EPERM);
                    else
                        CHECK_EQ(got, 0);
                    checked++;
                }
            }
        }
    }
    check_case[0] = '\0';
    CHECK(checked > 100000);
}

/* Commands the spec does not define (and RESIZE, never advertised) are
 * EINVAL whatever was negotiated. */
static void test_validate_unknown_commands(void)
{
    const uint16_t unknown[] = { PROTO_CMD_RESIZE, 9, 10, 0x7fff, 0xffff };
    struct proto_limits lim = make_limits(false, true, true, true,
                                          all_optional_tflags());

    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        struct proto_request req = {
            .type = unknown[i], .offset = 0, .length = 512,
        };
        set_case("command %u", unknown[i]);
        CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EINVAL);
        req.length = 0;
        CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EINVAL);
    }
    check_case[0] = '\0';
}

/* Commands with a range: at the end, one past it, offsets past it, and
 * offset + length wrapping around 2^64. */
static void test_validate_ranges(void)
{
    const uint16_t ranged[] = {
        PROTO_CMD_READ, PROTO_CMD_WRITE, PROTO_CMD_TRIM, PROTO_CMD_CACHE,
        PROTO_CMD_WRITE_ZEROES, PROTO_CMD_BLOCK_STATUS,
    };

    for (int ext = 0; ext < 2; ext++) {
        struct proto_limits lim = make_limits(false, true, ext, true,
                                              all_optional_tflags());
        /* Under max_payload, so that only the range can fail. */
        lim.export_size = 16 * MIB;
        const uint64_t size = lim.export_size;
        for (size_t i = 0; i < sizeof ranged / sizeof ranged[0]; i++) {
            uint16_t cmd = ranged[i];
            struct proto_request req = { .type = cmd };
            /* The spec asks ENOSPC for writes and write zeroes past the
             * end, EINVAL for reads, trims and the rest. */
            bool w = cmd == PROTO_CMD_WRITE || cmd == PROTO_CMD_WRITE_ZEROES;
            const struct { uint64_t off, len; bool ok; } cases[] = {
                { 0, 4 * KIB, true },
                { size - 4 * KIB, 4 * KIB, true },
                { size - 1, 1, true },
                { 0, size, true },
                { size - 4 * KIB, 4 * KIB + 1, false },
                { size - 1, 2, false },
                { 0, size + 1, false },
                { size, 1, false },
                { size + 1, 0, false },
                { size + 4 * KIB, 4 * KIB, false },
                { UINT64_MAX, 1, false },
                { UINT64_MAX, 0, false },
                { UINT64_MAX - 511, 4 * KIB, false },
                { 4 * KIB, size, false },
            };
            for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
                req.offset = cases[k].off;
                req.length = cases[k].len;
                set_case("%s offset %" PRIu64 " length %" PRIu64
                         " size %" PRIu64 " extended=%d",
                         proto_cmd_name(cmd), req.offset, req.length, size,
                         ext);
                uint32_t got = proto_validate_request(&req, &lim);
                if (cases[k].ok)
                    CHECK_EQ(got, 0);
                else if (w)
                    CHECK_EQ(got, PROTO_ENOSPC);
                else
                    CHECK_EQ(got, PROTO_EINVAL);
            }
            if (!ext)
                continue;
            /* 64-bit lengths that wrap the sum back inside the export. */
            req.offset = 4 * KIB;
            req.length = UINT64_MAX - 4 * KIB + 1;
            set_case("%s wrapping to 0", proto_cmd_name(cmd));
            CHECK(proto_validate_request(&req, &lim) != 0);
            req.length = UINT64_MAX;
            CHECK(proto_validate_request(&req, &lim) != 0);
            req.offset = UINT64_MAX - 4 * KIB + 1;
            req.length = 8 * KIB;
            CHECK(proto_validate_request(&req, &lim) != 0);
        }
    }
    check_case[0] = '\0';

    /* An export of size 0: only empty requests at offset 0 fit. */
    struct proto_limits empty = make_limits(false, true, false, true,
                                            all_optional_tflags());
    empty.export_size = 0;
    struct proto_request req = { .type = PROTO_CMD_READ, .length = 1 };
    CHECK_EQ(proto_validate_request(&req, &empty), PROTO_EINVAL);
    req.length = 0;
    CHECK_EQ(proto_validate_request(&req, &empty), 0);
    req.offset = 1;
    CHECK_EQ(proto_validate_request(&req, &empty), PROTO_EINVAL);
}

/* READ and WRITE carry a payload and are held to max_payload; commands
 * without one may ask for more (the spec's "effect length"). */
static void test_validate_payload_limits(void)
{
    for (int ext = 0; ext < 2; ext++) {
        struct proto_limits lim = make_limits(false, true, ext, true,
                                              all_optional_tflags());
        lim.export_size = 8 * GIB;
        struct proto_request req = { .offset = 0 };

        for (int c = 0; c < 2; c++) {
            req.type = c ? PROTO_CMD_WRITE : PROTO_CMD_READ;
            set_case("%s payload, extended=%d", proto_cmd_name(req.type),
                     ext);
            req.length = 32 * MIB;
            CHECK_EQ(proto_validate_request(&req, &lim), 0);
            req.length = 32 * MIB + 1;
            CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EINVAL);
            req.length = 0xffffffffu;
            CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EINVAL);
            req.length = 4 * GIB + 4096;
            CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EINVAL);
            /* A smaller advertised limit is honoured. */
            lim.max_payload = 64 * KIB;
            req.length = 64 * KIB;
            CHECK_EQ(proto_validate_request(&req, &lim), 0);
            req.length = 64 * KIB + 1;
            CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EINVAL);
            lim.max_payload = PROTO_MAX_PAYLOAD;
        }

        const uint16_t effect_only[] = {
            PROTO_CMD_TRIM, PROTO_CMD_WRITE_ZEROES, PROTO_CMD_CACHE,
            PROTO_CMD_BLOCK_STATUS,
        };
        for (size_t i = 0; i < sizeof effect_only / sizeof effect_only[0];
             i++) {
            req.type = effect_only[i];
            set_case("%s beyond max payload, extended=%d",
                     proto_cmd_name(req.type), ext);
            req.length = 32 * MIB + 1;
            CHECK_EQ(proto_validate_request(&req, &lim), 0);
            req.length = 0xffffffffu;
            CHECK_EQ(proto_validate_request(&req, &lim), 0);
            if (ext) {
                /* Only extended headers can express these. */
                req.length = 4 * GIB + 512;
                CHECK_EQ(proto_validate_request(&req, &lim), 0);
                req.length = 8 * GIB;
                CHECK_EQ(proto_validate_request(&req, &lim), 0);
            }
        }
    }
    check_case[0] = '\0';
}

/* Zero-length requests: the spec leaves them unspecified but says not to
 * disconnect; this implementation accepts them except for block status,
 * which must describe at least one byte. */
static void test_validate_zero_length(void)
{
    struct proto_limits lim = make_limits(false, true, false, true,
                                          all_optional_tflags());

    for (size_t c = 0; c < N_KNOWN_CMDS; c++) {
        struct proto_request req = {
            .type = known_cmds[c], .offset = 4 * KIB, .length = 0,
        };
        set_case("zero-length %s", proto_cmd_name(req.type));
        if (req.type == PROTO_CMD_BLOCK_STATUS)
            CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EINVAL);
        else
            CHECK_EQ(proto_validate_request(&req, &lim), 0);
        req.offset = lim.export_size;
        if (req.type == PROTO_CMD_BLOCK_STATUS)
            CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EINVAL);
        else
            CHECK_EQ(proto_validate_request(&req, &lim), 0);
    }
    check_case[0] = '\0';
}

/* Read-only exports refuse writes even when they are also out of range
 * or oversized, and never refuse reads. */
static void test_validate_read_only(void)
{
    struct proto_limits lim = make_limits(true, true, true, true,
                                          all_optional_tflags());
    struct proto_request req = {
        .type = PROTO_CMD_WRITE, .offset = 0, .length = 512,
    };

    CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EPERM);
    req.flags = PROTO_CMD_FLAG_FUA;
    CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EPERM);
    req.type = PROTO_CMD_WRITE_ZEROES;
    req.flags = PROTO_CMD_FLAG_NO_HOLE | PROTO_CMD_FLAG_FAST_ZERO;
    CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EPERM);
    req.type = PROTO_CMD_TRIM;
    req.flags = 0;
    CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EPERM);

    req.type = PROTO_CMD_READ;
    req.flags = PROTO_CMD_FLAG_DF;
    CHECK_EQ(proto_validate_request(&req, &lim), 0);
    req.type = PROTO_CMD_FLUSH;
    req.flags = 0;
    CHECK_EQ(proto_validate_request(&req, &lim), 0);
    req.type = PROTO_CMD_BLOCK_STATUS;
    req.flags = PROTO_CMD_FLAG_REQ_ONE;
    CHECK_EQ(proto_validate_request(&req, &lim), 0);
}

/* An advertised minimum block size: unaligned offsets and lengths are
 * EINVAL for every command but FLUSH and BLOCK_STATUS (whose length is
 * a hint); none advertised (0 or 1) means any alignment. */
static void test_validate_min_block(void)
{
    static const uint16_t cmds[] = {
        PROTO_CMD_READ, PROTO_CMD_WRITE, PROTO_CMD_TRIM,
        PROTO_CMD_WRITE_ZEROES, PROTO_CMD_CACHE,
    };
    struct proto_limits lim = make_limits(false, true, false, true,
                                          all_optional_tflags());
    struct proto_request req = { .offset = 512, .length = 1024 };

    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        req.type = cmds[i];
        req.offset = 512;
        req.length = 1024;
        lim.min_block = 512;
        CHECK_EQ(proto_validate_request(&req, &lim), 0);
        req.offset = 513;
        CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EINVAL);
        req.offset = 512;
        req.length = 1000;
        CHECK_EQ(proto_validate_request(&req, &lim), PROTO_EINVAL);
        lim.min_block = 1;
        CHECK_EQ(proto_validate_request(&req, &lim), 0);
        lim.min_block = 0;
        CHECK_EQ(proto_validate_request(&req, &lim), 0);
    }
    lim.min_block = 512;
    req.type = PROTO_CMD_BLOCK_STATUS;
    req.offset = 512;
    req.length = 1000;
    CHECK_EQ(proto_validate_request(&req, &lim), 0);
    req.type = PROTO_CMD_FLUSH;
    req.offset = 0;
    req.length = 0;
    CHECK_EQ(proto_validate_request(&req, &lim), 0);
}

static void test_errno_to_wire(void)
{
    const struct { int err; uint32_t wire; } map[] = {
        { 0, 0 },
        { EPERM, PROTO_EPERM }, { EROFS, PROTO_EPERM },
        { EIO, PROTO_EIO },
        { ETIMEDOUT, PROTO_EIO }, { ECONNRESET, PROTO_EIO },
        { ENOTCONN, PROTO_EIO }, { EBADMSG, PROTO_EIO },
        { ENOMEM, PROTO_ENOMEM },
        { EINVAL, PROTO_EINVAL },
        { ENOSPC, PROTO_ENOSPC }, { EDQUOT, PROTO_ENOSPC },
        { EFBIG, PROTO_ENOSPC },
        { EOVERFLOW, PROTO_EOVERFLOW },
        { ENOTSUP, PROTO_ENOTSUP }, { EOPNOTSUPP, PROTO_ENOTSUP },
        { ESHUTDOWN, PROTO_ESHUTDOWN },
        /* Anything else becomes EINVAL, as the client would read it. */
        { ENOENT, PROTO_EINVAL }, { EBADF, PROTO_EINVAL },
        { EAGAIN, PROTO_EINVAL }, { EPROTO, PROTO_EINVAL },
        { EACCES, PROTO_EINVAL }, { 4095, PROTO_EINVAL },
    };

    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        set_case("errno %d (%s)", map[i].err, strerror(map[i].err));
        CHECK_EQ(proto_errno_to_wire(map[i].err), map[i].wire);
    }

    /* Whatever the host errno, only values the spec defines go out. */
    for (int e = 1; e < 1024; e++) {
        uint32_t w = proto_errno_to_wire(e);
        set_case("errno %d", e);
        CHECK(w == PROTO_EPERM || w == PROTO_EIO || w == PROTO_ENOMEM ||
              w == PROTO_EINVAL || w == PROTO_ENOSPC ||
              w == PROTO_EOVERFLOW || w == PROTO_ENOTSUP ||
              w == PROTO_ESHUTDOWN);
    }
    check_case[0] = '\0';
}

static void test_names(void)
{
    CHECK(strcmp(proto_cmd_name(PROTO_CMD_READ), "READ") == 0);
    CHECK(strcmp(proto_cmd_name(PROTO_CMD_BLOCK_STATUS),
                 "BLOCK_STATUS") == 0);
    CHECK(strcmp(proto_cmd_name(PROTO_CMD_RESIZE), "RESIZE") == 0);
    CHECK(strcmp(proto_cmd_name(9), "UNKNOWN") == 0);
    CHECK(strcmp(proto_cmd_name(0xffff), "UNKNOWN") == 0);
    CHECK(strcmp(proto_opt_name(PROTO_OPT_GO), "GO") == 0);
    CHECK(strcmp(proto_opt_name(PROTO_OPT_EXTENDED_HEADERS),
                 "EXTENDED_HEADERS") == 0);
    CHECK(strcmp(proto_opt_name(12), "UNKNOWN") == 0);
    CHECK(strcmp(proto_opt_name(0xffffffffu), "UNKNOWN") == 0);
}

int main(void)
{
    const char *s = getenv("DS_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);

    printf("test-protocol: seed %" PRIu64 " (set DS_TEST_SEED to "
           "replay)\n", seed);
    rng_state = seed ? seed : 1;
    fence_init();

    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        { "greeting", test_greeting },
        { "client flags", test_client_flags },
        { "option header", test_option_header },
        { "option reply", test_option_reply },
        { "export name reply", test_export_name_reply },
        { "GO/INFO data", test_decode_go },
        { "meta context data", test_decode_meta },
        { "info encoders", test_info_encoders },
        { "compact request", test_decode_request_compact },
        { "extended request", test_decode_request_extended },
        { "request round trip", test_request_round_trip },
        { "simple reply", test_simple_reply },
        { "chunk headers", test_chunk_headers },
        { "hole payload", test_hole },
        { "error payload", test_error_payload },
        { "block status payload", test_block_status_payload },
        { "request payload", test_request_payload },
        { "validate: command x flag x state", test_validate_matrix },
        { "validate: unknown commands", test_validate_unknown_commands },
        { "validate: ranges", test_validate_ranges },
        { "validate: payload limits", test_validate_payload_limits },
        { "validate: zero length", test_validate_zero_length },
        { "validate: minimum block size", test_validate_min_block },
        { "validate: read-only", test_validate_read_only },
        { "errno to wire", test_errno_to_wire },
        { "names", test_names },
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        check_case[0] = '\0';
        tests[i].fn();
        printf("ok: %s\n", tests[i].name);
    }
    return 0;
}
