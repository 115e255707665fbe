/* qcow2w-overlap: many concurrent writes to the same few unallocated
 * clusters, each sector of each write carrying a pattern that names its
 * round, its writer and itself.
 *
 * Each round takes a fresh region (--region bytes, a few clusters) and
 * issues --writers requests at once, spread over the connections: mostly
 * writes, some zero writes (--zeros percent, 12 by default), of random
 * sector-aligned ranges inside the region, so that they overlap each
 * other and share clusters and subclusters.  When all have answered,
 * the region is read back, and every sector must hold exactly one of the
 * values written to it in that round (a whole sector of one writer: never
 * a mix, never a lost write), or its starting contents if no request
 * covered it.  At the end the
 * whole disk is read once more and must match what the rounds read, and
 * that is saved (--out) for qemu-img compare.
 *
 * Usage: qcow2w-overlap --uri URI --seed N --rounds N --region BYTES
 *            --out FILE [--writers N] [--connections N] [--initial RAW]
 *            [--zeros PERCENT]
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2w-aio.h"

#define MAX_WRITERS 256

struct wreq {
    unsigned writer;
    bool zero;
    uint32_t flags;
    uint64_t first, count;      /* sectors, relative to the region */
    uint8_t *buf;
    int err;
    bool done;
    unsigned conn;
    struct qw_conn *conns;
};

static uint64_t seed;

/* The 512 bytes writer w of round r writes to absolute sector s. */
static void pattern(uint8_t *out, uint64_t r, unsigned w, uint64_t s)
{
    uint64_t head[4] = { 0x5157524f554e4421ULL, r, w, s };

    qw_fill(out, QW_SECTOR,
            seed ^ (r * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)w << 48) ^
            (s * 0xff51afd7ed558ccdULL));
    memcpy(out, head, sizeof head);
}

static int wreq_done(void *opaque, int *error)
{
    struct wreq *q = opaque;

    q->conns[q->conn].inflight--;
    q->err = *error;
    q->done = true;
    return 1;
}

static int read_done(void *opaque, int *error)
{
    struct qw_conn *c = opaque;

    c->inflight--;
    if (*error)
        qw_die("read failed: %s (seed %" PRIu64 ")", strerror(*error), seed);
    return 1;
}

/* Read len bytes at off into buf through connection 0 and wait. */
static void read_back(struct qw_conn *conns, unsigned n, uint8_t *buf,
                      uint64_t len, uint64_t off)
{
    const uint64_t chunk = 4 * 1024 * 1024;

    for (uint64_t done = 0; done < len; done += chunk) {
        uint64_t l = len - done < chunk ? len - done : chunk;
        unsigned i = (unsigned)(done / chunk % n);
        nbd_completion_callback cb = { .callback = read_done,
                                       .user_data = &conns[i] };
        conns[i].inflight++;
        if (nbd_aio_pread(conns[i].h, buf + done, l, off + done, cb, 0) == -1)
            qw_die("read at %" PRIu64 ": %s", off + done, nbd_get_error());
    }
    qw_drain(conns, n);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: qcow2w-overlap --uri URI --seed N --rounds N "
            "--region BYTES --out FILE\n"
            "           [--writers N] [--connections N] [--initial RAW]\n"
            "           [--zeros PERCENT]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "uri", required_argument, NULL, 'u' },
        { "seed", required_argument, NULL, 's' },
        { "rounds", required_argument, NULL, 'n' },
        { "region", required_argument, NULL, 'R' },
        { "out", required_argument, NULL, 'o' },
        { "writers", required_argument, NULL, 'w' },
        { "connections", required_argument, NULL, 'c' },
        { "initial", required_argument, NULL, 'i' },
        { "zeros", required_argument, NULL, 'z' },
        { NULL, 0, NULL, 0 },
    };
    const char *uri = NULL, *out = NULL, *initial = NULL;
    uint64_t rounds = 0, region = 0;
    unsigned writers = 16, nconns = 4, zeros = 12;
    int c;

    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'u': uri = optarg; break;
        case 's': seed = strtoull(optarg, NULL, 0); break;
        case 'n': rounds = strtoull(optarg, NULL, 0); break;
        case 'R': region = qw_parse_size("--region", optarg); break;
        case 'o': out = optarg; break;
        case 'w': writers = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'c': nconns = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'i': initial = optarg; break;
        case 'z': zeros = (unsigned)strtoul(optarg, NULL, 0); break;
        default: usage();
        }
    }
    if (!uri || !out || optind != argc || rounds == 0 || region == 0 ||
        region % QW_SECTOR || writers == 0 || writers > MAX_WRITERS)
        usage();

    struct qw_conn conns[64];
    uint64_t size = qw_connect_all(conns, nconns, uri);
    if (rounds * region > size)
        qw_die("%" PRIu64 " rounds of %" PRIu64 " bytes do not fit in %"
               PRIu64, rounds, region, size);

    uint8_t *shadow = calloc(1, size);
    uint8_t *got = malloc(region);
    uint8_t *cand = malloc(QW_SECTOR);
    struct wreq *q = calloc(writers, sizeof *q);
    uint64_t nsec = region / QW_SECTOR;
    if (!shadow || !got || !cand || !q)
        qw_die("out of memory");
    for (unsigned w = 0; w < writers; w++) {
        q[w].buf = malloc(region);
        if (!q[w].buf)
            qw_die("out of memory");
        q[w].conns = conns;
    }
    if (initial)
        qw_load(initial, shadow, size);

    printf("qcow2w-overlap: seed %" PRIu64 ", %" PRIu64 " rounds of %u "
           "writers over %" PRIu64 " bytes, %u connections\n", seed, rounds,
           writers, region, nconns);
    fflush(stdout);

    uint64_t rng = seed, not_last = 0, zero_wins = 0, kept = 0;
    for (uint64_t r = 0; r < rounds; r++) {
        uint64_t base = r * region, base_sec = base / QW_SECTOR;

        for (unsigned w = 0; w < writers; w++) {
            struct wreq *x = &q[w];
            x->writer = w;
            x->zero = qw_below(&rng, 100) < zeros;
            x->flags = 0;
            if (x->zero && qw_below(&rng, 2))
                x->flags |= LIBNBD_CMD_FLAG_NO_HOLE;
            if (qw_below(&rng, 8) == 0)
                x->flags |= LIBNBD_CMD_FLAG_FUA;
            if (qw_below(&rng, 3) == 0) {
                x->first = qw_below(&rng, 2);
                x->count = nsec - x->first - qw_below(&rng, 2);
            } else {
                x->first = qw_below(&rng, nsec);
                x->count = 1 + qw_below(&rng, nsec - x->first);
            }
            if (x->count == 0)
                x->count = 1;
            x->conn = w % nconns;
            x->done = false;
            x->err = 0;
            if (!x->zero)
                for (uint64_t s = 0; s < x->count; s++)
                    pattern(x->buf + s * QW_SECTOR, r, w,
                            base_sec + x->first + s);
        }
        /* Issue them all before reading any reply. */
        for (unsigned w = 0; w < writers; w++) {
            struct wreq *x = &q[w];
            nbd_completion_callback cb = { .callback = wreq_done,
                                           .user_data = x };
            uint64_t off = base + x->first * QW_SECTOR;
            uint64_t len = x->count * QW_SECTOR;
            int64_t ck;
            conns[x->conn].inflight++;
            if (x->zero)
                ck = nbd_aio_zero(conns[x->conn].h, len, off, cb, x->flags);
            else
                ck = nbd_aio_pwrite(conns[x->conn].h, x->buf, len, off, cb,
                                    x->flags);
            if (ck == -1)
                qw_die("round %" PRIu64 " writer %u: %s", r, w,
                       nbd_get_error());
        }
        qw_drain(conns, nconns);
        for (unsigned w = 0; w < writers; w++)
            if (q[w].err)
                qw_die("round %" PRIu64 " writer %u (%s %" PRIu64 "+%" PRIu64
                       " sectors) failed: %s (seed %" PRIu64 ")", r, w,
                       q[w].zero ? "zero" : "write",
                       base_sec + q[w].first, q[w].count,
                       strerror(q[w].err), seed);

        read_back(conns, nconns, got, region, base);
        for (uint64_t s = 0; s < nsec; s++) {
            const uint8_t *g = got + s * QW_SECTOR;
            int winner = -2, last = -1;
            bool covered = false;
            for (unsigned w = 0; w < writers && winner < -1; w++) {
                struct wreq *x = &q[w];
                if (s < x->first || s >= x->first + x->count)
                    continue;
                covered = true;
                last = (int)w;
                if (x->zero) {
                    static const uint8_t nul[QW_SECTOR];
                    if (memcmp(g, nul, QW_SECTOR) == 0)
                        winner = (int)w;
                } else {
                    pattern(cand, r, w, base_sec + s);
                    if (memcmp(g, cand, QW_SECTOR) == 0)
                        winner = (int)w;
                }
            }
            if (!covered) {
                if (memcmp(g, shadow + base + s * QW_SECTOR, QW_SECTOR))
                    qw_die("round %" PRIu64 ": sector %" PRIu64 " was not "
                           "written but changed (seed %" PRIu64 ")", r,
                           base_sec + s, seed);
                kept++;
                continue;
            }
            if (winner < 0) {
                uint64_t h[4];
                memcpy(h, g, sizeof h);
                qw_die("round %" PRIu64 ": sector %" PRIu64 " holds none of "
                       "the values written to it (its first words: %016"
                       PRIx64 " %" PRIu64 " %" PRIu64 " %" PRIu64
                       ") (seed %" PRIu64 ")", r, base_sec + s, h[0], h[1],
                       h[2], h[3], seed);
            }
            /* Count sectors whose final value was not from the highest
             * writer covering it: a sign the writes really raced. */
            for (unsigned w = (unsigned)winner + 1; w < writers; w++)
                if (s >= q[w].first && s < q[w].first + q[w].count)
                    last = (int)w;
            if (winner != last)
                not_last++;
            if (q[winner].zero)
                zero_wins++;
        }
        memcpy(shadow + base, got, region);
    }

    /* The whole disk once more: nothing outside the rounds' writes moved,
     * and each round's region still reads what it read then. */
    uint8_t *all = malloc(size);
    if (!all)
        qw_die("out of memory");
    read_back(conns, nconns, all, size, 0);
    for (uint64_t off = 0; off < size; off += QW_SECTOR)
        if (memcmp(all + off, shadow + off, QW_SECTOR))
            qw_die("sector %" PRIu64 " changed after its round "
                   "(seed %" PRIu64 ")", off / QW_SECTOR, seed);
    qw_close_all(conns, nconns);
    qw_save(out, shadow, size);
    printf("qcow2w-overlap: every sector holds one writer's value; %" PRIu64
           " sectors ended with an earlier writer's value than the last "
           "issued, %" PRIu64 " with a zero write's, %" PRIu64 " untouched\n",
           not_last, zero_wins, kept);
    for (unsigned w = 0; w < writers; w++)
        free(q[w].buf);
    free(q);
    free(all);
    free(cand);
    free(got);
    free(shadow);
    return 0;
}
