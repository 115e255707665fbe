/* Claim: one connection can have 64 requests in flight at once, writes
 * and reads mixed, with simple and with structured replies, on a Unix
 * socket and on TCP, and every reply carries the right data for its own
 * request whatever order the replies come in.  The same with a single
 * worker thread (--threads 1), where nothing may wait on a second one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define BLOCK (256 * KiB)
#define NR_BLOCKS 128
#define SIZE ((uint64_t)NR_BLOCKS * BLOCK)
#define IN_FLIGHT 64

static char image[256];

struct op {
    unsigned block;
    bool is_read;
    bool done;
    int error;
    unsigned char *buf;         /* data written, or read into */
    const unsigned char *want;  /* for reads: what must arrive */
    bool mismatch;
    unsigned *nr_done;
};

/* Runs inside libnbd: records the outcome, checks read data, and never
 * calls back into libnbd. */
static int op_done(void *opaque, int *error)
{
    struct op *op = opaque;

    op->done = true;
    op->error = *error;
    if (op->is_read && *error == 0)
        op->mismatch = memcmp(op->buf, op->want, BLOCK) != 0;
    (*op->nr_done)++;
    return 1;
}

static void issue(struct nbd_handle *h, struct op *op)
{
    nbd_completion_callback cb = { .callback = op_done, .user_data = op };
    int64_t cookie;

    if (op->is_read)
        cookie = nbd_aio_pread(h, op->buf, BLOCK, (uint64_t)op->block * BLOCK,
                               cb, 0);
    else
        cookie = nbd_aio_pwrite(h, op->buf, BLOCK,
                                (uint64_t)op->block * BLOCK, cb,
                                op->block % 3 == 0 ? LIBNBD_CMD_FLAG_FUA : 0);
    DS_CHECK(cookie > 0, "aio request for block %u: %s", op->block,
             nbd_get_error());
}

/* Issue every op before waiting for any, then wait for all. */
static void run_batch(struct nbd_handle *h, struct op *ops, unsigned n,
                      const char *what)
{
    unsigned nr_done = 0;
    int64_t in_flight;

    for (unsigned i = 0; i < n; i++) {
        ops[i].nr_done = &nr_done;
        issue(h, &ops[i]);
    }
    in_flight = nbd_aio_in_flight(h);
    DS_CHECK(in_flight + nr_done == n, "%s: %lld in flight + %u done != %u",
             what, (long long)in_flight, nr_done, n);
    while (nr_done < n)
        DS_NBD(nbd_poll(h, -1));
    for (unsigned i = 0; i < n; i++) {
        DS_CHECK(ops[i].done && ops[i].error == 0,
                 "%s: %s of block %u failed: errno %d", what,
                 ops[i].is_read ? "read" : "write", ops[i].block,
                 ops[i].error);
        DS_CHECK(!ops[i].mismatch, "%s: read of block %u returned the "
                 "wrong data", what, ops[i].block);
    }
}

static void exercise(const struct ds_server *s, bool structured,
                     unsigned char *model, unsigned round)
{
    struct nbd_handle *h = ds_handle();
    struct op ops[IN_FLIGHT];
    unsigned char *bufs = ds_malloc((size_t)IN_FLIGHT * BLOCK);
    char what[64];

    DS_NBD(nbd_set_request_structured_replies(h, structured));
    DS_NBD(ds_connect(h, s));
    snprintf(what, sizeof what, "%s %s", ds_transport_name(s->transport),
             structured ? "structured" : "simple");
    printf("%s\n", what);

    /* 64 writes at once to the first half. */
    for (unsigned i = 0; i < IN_FLIGHT; i++) {
        unsigned char *m = model + (size_t)i * BLOCK;
        ds_fill(m, BLOCK, round * 1000 + i);
        ops[i] = (struct op){ .block = i, .buf = m };
    }
    run_batch(h, ops, IN_FLIGHT, what);

    /* 32 reads of those blocks and 32 writes to the second half, all in
     * flight together, interleaved. */
    for (unsigned i = 0; i < IN_FLIGHT; i++) {
        unsigned char *buf = bufs + (size_t)i * BLOCK;
        if (i % 2 == 0) {
            unsigned b = (i * 7) % IN_FLIGHT;
            ops[i] = (struct op){ .block = b, .is_read = true, .buf = buf,
                                  .want = model + (size_t)b * BLOCK };
        } else {
            unsigned b = IN_FLIGHT + i;
            unsigned char *m = model + (size_t)b * BLOCK;
            ds_fill(m, BLOCK, round * 1000 + b);
            ops[i] = (struct op){ .block = b, .buf = m };
        }
    }
    run_batch(h, ops, IN_FLIGHT, what);

    /* 64 reads at once of everything written so far. */
    for (unsigned i = 0; i < IN_FLIGHT; i++) {
        unsigned b = i % 2 ? IN_FLIGHT + i : i;
        ops[i] = (struct op){ .block = b, .is_read = true,
                              .buf = bufs + (size_t)i * BLOCK,
                              .want = model + (size_t)b * BLOCK };
    }
    run_batch(h, ops, IN_FLIGHT, what);

    DS_NBD(nbd_flush(h, 0));
    DS_NBD(nbd_shutdown(h, 0));
    nbd_close(h);
    free(bufs);
}

static void check_file(const unsigned char *model)
{
    unsigned char *buf = ds_malloc(SIZE);

    ds_read_file(image, buf, SIZE, 0);
    for (unsigned b = 0; b < NR_BLOCKS; b++)
        DS_CHECK(memcmp(buf + (size_t)b * BLOCK, model + (size_t)b * BLOCK,
                        BLOCK) == 0, "file block %u differs", b);
    free(buf);
}

int main(void)
{
    unsigned char *model;
    unsigned round = 0;

    ds_init("one-connection-carries-64-requests", 300);
    ds_path(image, sizeof image, "disk.img");
    ds_create_file(image, SIZE);
    model = calloc(1, SIZE);
    DS_CHECK(model != NULL, "calloc");

    for (int run = 0; run < 2 * DS_NR_TRANSPORTS; run++) {
        const char *args[] = { "-f", "raw", image, NULL, NULL, NULL };
        enum ds_transport t = (enum ds_transport)(run % DS_NR_TRANSPORTS);
        struct ds_server s;

        if (run >= DS_NR_TRANSPORTS) {
            args[2] = "--threads";
            args[3] = "1";
            args[4] = image;
            printf("--threads 1\n");
        }
        ds_server_start(&s, t, args);
        exercise(&s, true, model, ++round);
        check_file(model);
        exercise(&s, false, model, ++round);
        check_file(model);
        ds_server_stop(&s);
    }
    free(model);
    printf("PASS\n");
    return 0;
}
