/* Claim: clients that misbehave, all at the same time, cost the server
 * nothing that other clients notice.  Over a Unix socket and TCP, with
 * raw sockets speaking the protocol by hand:
 *   - one connects and says nothing (dropped at --handshake-timeout);
 *   - one sends client flags with unknown bits (dropped at once, as the
 *     spec requires);
 *   - one sends half of a 1 MiB WRITE payload, stalls, then disconnects
 *     mid-payload (nothing of that write may reach the file);
 *   - one queues 128 READs of 1 MiB and never reads a reply;
 *   - one sends a request with a bad magic (dropped).
 * Meanwhile a well-behaved libnbd client writes, reads and flushes
 * promptly, and afterwards the server still serves and exits cleanly.
 *
 * This test owns "disconnect mid-payload" for the integration suite; the
 * protocol tests cover malformed handshakes in detail.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* The wire values this test needs, from nbd-proto.md, written here
 * rather than taken from protocol/ so the test is an independent check. */
#define MAGIC_NBD       0x4e42444d41474943ULL   /* "NBDMAGIC" */
#define MAGIC_OPT       0x49484156454f5054ULL   /* "IHAVEOPT" */
#define MAGIC_OPT_REPLY 0x0003e889045565a9ULL
#define MAGIC_REQUEST   0x25609513u
#define OPT_GO          7u
#define REP_ACK         1u
#define REP_ERROR_BIT   0x80000000u
#define CMD_READ        0u
#define CMD_WRITE       1u
#define FLAG_FIXED_NEWSTYLE 1u
#define FLAG_NO_ZEROES      2u

#define SIZE (8 * MiB)
#define HANDSHAKE_TIMEOUT 2

static char image[256];
static unsigned char *contents;

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static void send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t r = send(fd, p, len, MSG_NOSIGNAL);
        DS_CHECK(r > 0, "send: %m");
        p += r;
        len -= (size_t)r;
    }
}

static void recv_all(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t r = recv(fd, p, len, 0);
        DS_CHECK(r > 0, "recv: %s", r == 0 ? "end of stream" : strerror(errno));
        p += r;
        len -= (size_t)r;
    }
}

/* Whether the server closes fd within timeout seconds (whatever it sends
 * first is read and dropped). */
static bool closed_within(int fd, double timeout)
{
    double end = now() + timeout;
    char buf[4096];

    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int ms = (int)((end - now()) * 1000);
        if (ms <= 0)
            return false;
        if (poll(&p, 1, ms) <= 0)
            continue;
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return true;
    }
}

/* Fixed newstyle handshake ending in NBD_OPT_GO for export "". */
static int raw_open(const struct ds_server *s)
{
    int fd = ds_raw_connect(s);
    unsigned char greet[18], opt[22], rep[20];

    recv_all(fd, greet, sizeof greet);
    DS_CHECK(get64(greet) == MAGIC_NBD && get64(greet + 8) == MAGIC_OPT,
             "not a newstyle greeting");
    DS_CHECK(greet[17] & FLAG_FIXED_NEWSTYLE, "server is not fixed newstyle");
    DS_CHECK(greet[17] & FLAG_NO_ZEROES, "server lacks NO_ZEROES");
    put32(opt, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    send_all(fd, opt, 4);

    put64(opt, MAGIC_OPT);
    put32(opt + 8, OPT_GO);
    put32(opt + 12, 6);         /* name length (0), name, info count (0) */
    put32(opt + 16, 0);
    put16(opt + 20, 0);
    send_all(fd, opt, 22);
    for (;;) {
        recv_all(fd, rep, sizeof rep);
        DS_CHECK(get64(rep) == MAGIC_OPT_REPLY, "bad option reply magic");
        uint32_t type = get32(rep + 12), len = get32(rep + 16);
        DS_CHECK(!(type & REP_ERROR_BIT), "GO refused: 0x%x", type);
        unsigned char *payload = ds_malloc(len);
        recv_all(fd, payload, len);
        free(payload);
        if (type == REP_ACK)
            return fd;
    }
}

static void raw_request(int fd, uint16_t type, uint64_t cookie,
                        uint64_t off, uint32_t len)
{
    unsigned char req[28];

    put32(req, MAGIC_REQUEST);
    put16(req + 4, 0);
    put16(req + 6, type);
    put64(req + 8, cookie);
    put64(req + 16, off);
    put32(req + 24, len);
    send_all(fd, req, sizeof req);
}

/* The well-behaved client: must get its work done promptly. */
static void good_client(const struct ds_server *s, uint64_t off,
                        uint64_t tag, const char *when)
{
    unsigned char *buf = ds_malloc(1 * MiB), *back = ds_malloc(1 * MiB);
    double start = now();
    struct nbd_handle *h = ds_open(s, "");

    ds_fill(buf, 1 * MiB, tag);
    DS_NBD(nbd_pwrite(h, buf, 1 * MiB, off, 0));
    DS_NBD(nbd_pread(h, back, 1 * MiB, off, 0));
    DS_CHECK(memcmp(buf, back, 1 * MiB) == 0, "%s: read back differs", when);
    DS_NBD(nbd_flush(h, 0));
    DS_NBD(nbd_shutdown(h, 0));
    nbd_close(h);
    DS_CHECK(now() - start < 5.0, "%s: the good client took %.1f s", when,
             now() - start);
    memcpy(contents + off, buf, 1 * MiB);
    free(buf);
    free(back);
}

static void exercise(const struct ds_server *s)
{
    const char *tname = ds_transport_name(s->transport);
    unsigned char bad[28], greet[18], *half;
    int silent, badflags, midpayload, deaf, badmagic;
    double t_silent;

    printf("%s: misbehaving clients\n", tname);

    silent = ds_raw_connect(s);
    t_silent = now();

    badflags = ds_raw_connect(s);
    recv_all(badflags, greet, sizeof greet);
    put32(bad, 0xffffffffu);
    send_all(badflags, bad, 4);

    midpayload = raw_open(s);
    raw_request(midpayload, CMD_WRITE, 1, 0, 1 * MiB);
    half = ds_malloc(512 * KiB);
    memset(half, 0xee, 512 * KiB);
    send_all(midpayload, half, 512 * KiB);
    free(half);

    deaf = raw_open(s);
    for (uint64_t i = 0; i < 128; i++)
        raw_request(deaf, CMD_READ, 1000 + i, (i % 8) * MiB, 1 * MiB);

    badmagic = raw_open(s);
    memset(bad, 0x5c, sizeof bad);
    send_all(badmagic, bad, sizeof bad);

    good_client(s, 2 * MiB, 50, "among misbehaving clients");

    DS_CHECK(closed_within(badflags, 5),
             "%s: client flags 0xffffffff did not end the connection", tname);
    DS_CHECK(closed_within(badmagic, 5),
             "%s: a bad request magic did not end the connection", tname);

    /* Disconnect in the middle of the write payload. */
    close(midpayload);
    good_client(s, 3 * MiB, 51, "after a disconnect mid-payload");

    DS_CHECK(closed_within(silent, HANDSHAKE_TIMEOUT + 5),
             "%s: a silent client outlived --handshake-timeout %d", tname,
             HANDSHAKE_TIMEOUT);
    DS_CHECK(now() - t_silent >= HANDSHAKE_TIMEOUT - 0.5,
             "%s: the silent client was dropped after only %.1f s", tname,
             now() - t_silent);

    close(deaf);
    close(badflags);
    close(badmagic);
    close(silent);
    good_client(s, 4 * MiB, 52, "after every misbehaving client left");

    /* Nothing of the half-sent write, everything of the good ones. */
    unsigned char *file = ds_malloc(SIZE);
    struct nbd_handle *h = ds_open(s, "");
    DS_NBD(nbd_pread(h, file, SIZE, 0, 0));
    nbd_close(h);
    DS_CHECK(memcmp(file, contents, SIZE) == 0,
             "%s: the export differs from what the good clients wrote "
             "(first block: %s)", tname,
             memcmp(file, contents, 1 * MiB) ? "changed" : "intact");
    ds_read_file(image, file, SIZE, 0);
    DS_CHECK(memcmp(file, contents, SIZE) == 0, "%s: the file differs",
             tname);
    free(file);
}

int main(void)
{
    char timeout[16];

    ds_init("misbehaving-clients-do-not-disturb-others", 180);
    ds_path(image, sizeof image, "disk.img");
    ds_create_file(image, SIZE);
    contents = ds_malloc(SIZE);
    ds_fill(contents, SIZE, 9);
    ds_write_file(image, contents, SIZE, 0);
    snprintf(timeout, sizeof timeout, "%d", HANDSHAKE_TIMEOUT);

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "-f", "raw", "--handshake-timeout", timeout,
                               image, NULL };
        struct ds_server s;

        ds_server_start(&s, (enum ds_transport)t, args);
        exercise(&s);
        DS_CHECK(ds_server_is_alive(&s), "the server died");
        ds_server_stop(&s);
    }
    free(contents);
    printf("PASS\n");
    return 0;
}
