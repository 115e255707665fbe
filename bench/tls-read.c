/* tls-read: reads at a fixed queue depth through libnbd, for benchmarks
 * fio cannot run: fio's nbd engine has no way to name a TLS certificate
 * directory or PSK file, libnbd's URIs do.
 *
 *   tls-read URI BLOCK-SIZE QUEUE-DEPTH SECONDS rand|seq [RANGE-BYTES]
 *
 * Keeps QUEUE-DEPTH reads of BLOCK-SIZE in flight for SECONDS (random
 * block-aligned offsets, or one sequential cursor that wraps) within the
 * first RANGE-BYTES of the export, and prints one line:
 *   ops N seconds S iops I mibps M tls yes|no
 * Exits 1 on any failed read.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#define MAX_QD 256

struct slot {
    bool busy;
    bool failed;
    uint64_t *done;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs inside libnbd: touches only the slot, never the handle. */
static int on_done(void *user, int *error)
{
    struct slot *s = user;
    if (*error)
        s->failed = true;
    s->busy = false;
    (*s->done)++;
    return 1;
}

static uint64_t next_rand(uint64_t *x)
{
    /* xorshift64*: cheap, seeded, good enough for offsets */
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * 2685821657736338717ull;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s URI BLOCK-SIZE QUEUE-DEPTH SECONDS "
                "rand|seq [RANGE-BYTES]\n", argv[0]);
        return 2;
    }
    const char *uri = argv[1];
    uint64_t bs = strtoull(argv[2], NULL, 10);
    unsigned qd = (unsigned)strtoul(argv[3], NULL, 10);
    double secs = strtod(argv[4], NULL);
    bool seq = strcmp(argv[5], "seq") == 0;
    uint64_t range = argc > 6 ? strtoull(argv[6], NULL, 10) : 0;

    if (bs == 0 || qd == 0 || qd > MAX_QD || secs <= 0) {
        fprintf(stderr, "%s: bad block size, queue depth or time\n", argv[0]);
        return 2;
    }
    struct nbd_handle *h = nbd_create();
    if (!h || nbd_set_uri_allow_local_file(h, true) == -1 ||
        nbd_connect_uri(h, uri) == -1) {
        fprintf(stderr, "%s: %s\n", argv[0], nbd_get_error());
        return 1;
    }
    int64_t size = nbd_get_size(h);
    if (size < 0) {
        fprintf(stderr, "%s: %s\n", argv[0], nbd_get_error());
        return 1;
    }
    if (range == 0 || range > (uint64_t)size)
        range = (uint64_t)size;
    uint64_t blocks = range / bs;
    if (blocks == 0) {
        fprintf(stderr, "%s: export smaller than one block\n", argv[0]);
        return 1;
    }
    char *bufs = malloc(bs * qd);
    struct slot slots[MAX_QD];
    uint64_t done = 0, cursor = 0, rnd = 0x9e3779b97f4a7c15ull;
    if (!bufs)
        return 1;
    for (unsigned i = 0; i < qd; i++)
        slots[i] = (struct slot){ .busy = false, .done = &done };

    double t0 = now(), end = t0 + secs;
    bool stopping = false;
    for (;;) {
        unsigned busy = 0;
        for (unsigned i = 0; i < qd; i++) {
            if (slots[i].failed) {
                fprintf(stderr, "%s: a read failed\n", argv[0]);
                return 1;
            }
            if (slots[i].busy) {
                busy++;
                continue;
            }
            if (stopping)
                continue;
            uint64_t blk = seq ? cursor++ % blocks : next_rand(&rnd) % blocks;
            nbd_completion_callback cb = { .callback = on_done,
                                           .user_data = &slots[i] };
            slots[i].busy = true;
            if (nbd_aio_pread(h, bufs + i * bs, bs, blk * bs, cb, 0) == -1) {
                fprintf(stderr, "%s: %s\n", argv[0], nbd_get_error());
                return 1;
            }
            busy++;
        }
        if (stopping && busy == 0)
            break;
        if (nbd_poll(h, -1) == -1) {
            fprintf(stderr, "%s: %s\n", argv[0], nbd_get_error());
            return 1;
        }
        if (!stopping && now() >= end)
            stopping = true;
    }
    double took = now() - t0;
    printf("ops %" PRIu64 " seconds %.3f iops %.0f mibps %.1f tls %s\n",
           done, took, (double)done / took,
           (double)done * (double)bs / took / 1048576.0,
           nbd_get_tls_negotiated(h) == 1 ? "yes" : "no");
    nbd_shutdown(h, 0);
    nbd_close(h);
    free(bufs);
    return 0;
}
