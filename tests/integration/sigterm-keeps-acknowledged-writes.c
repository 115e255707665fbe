/* Claim: SIGTERM while writes are in flight loses no acknowledged write.
 * A client queues hundreds of writes (some with FUA) on one connection,
 * the server gets SIGTERM while they are moving, and then: the server
 * exits with status 0, and every write it acknowledged before the
 * connection closed is in the image file.  Writes it never acknowledged
 * may or may not be there, but never half of one block mixed with the
 * old contents of another.  Repeated with the signal at different points,
 * over a Unix socket and TCP.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define BLOCK (128 * KiB)
#define NR_BLOCKS 512
#define SIZE ((uint64_t)NR_BLOCKS * BLOCK)

static char image[256];

struct write {
    unsigned block;
    bool done;
    int error;
    unsigned *nr_done;
};

/* Inside libnbd: record the outcome only. */
static int write_done(void *opaque, int *error)
{
    struct write *w = opaque;

    w->done = true;
    w->error = *error;
    (*w->nr_done)++;
    return 1;
}

static void one_round(enum ds_transport t, unsigned round,
                      unsigned kill_after)
{
    const char *args[] = { "-f", "raw", image, NULL };
    static struct write writes[NR_BLOCKS];
    unsigned char *data = ds_malloc(SIZE), *file = ds_malloc(SIZE);
    unsigned nr_done = 0, acked = 0;
    struct ds_server s;
    struct nbd_handle *h;
    int status;

    ds_create_file(image, SIZE);
    ds_server_start(&s, t, args);
    h = ds_open(&s, "");

    for (unsigned b = 0; b < NR_BLOCKS; b++) {
        ds_fill(data + (size_t)b * BLOCK, BLOCK, round * 10000 + b);
        writes[b] = (struct write){ .block = b, .nr_done = &nr_done };
        int64_t c = nbd_aio_pwrite(h, data + (size_t)b * BLOCK, BLOCK,
                                   (uint64_t)b * BLOCK,
                                   (nbd_completion_callback){
                                       .callback = write_done,
                                       .user_data = &writes[b] },
                                   b % 4 == 0 ? LIBNBD_CMD_FLAG_FUA : 0);
        DS_CHECK(c > 0, "aio_pwrite: %s", nbd_get_error());
    }

    /* Let some complete, then signal with the rest in flight. */
    while (nr_done < kill_after)
        DS_NBD(nbd_poll(h, -1));
    DS_CHECK(kill(s.pid, SIGTERM) == 0, "kill: %m");

    /* Drain: until every write has an outcome or the connection dies
     * (libnbd then fails whatever is left). */
    while (nr_done < NR_BLOCKS && !nbd_aio_is_dead(h) &&
           !nbd_aio_is_closed(h))
        if (nbd_poll(h, 1000) == -1)
            break;
    status = ds_server_wait(&s, 30);
    nbd_close(h);   /* fails any write still without an outcome */
    DS_CHECK(status != -1, "server still running 30 s after SIGTERM");
    DS_CHECK(status == 0, "server exited with status %d after SIGTERM",
             status);

    ds_read_file(image, file, SIZE, 0);
    for (unsigned b = 0; b < NR_BLOCKS; b++) {
        const unsigned char *want = data + (size_t)b * BLOCK;
        const unsigned char *got = file + (size_t)b * BLOCK;
        if (writes[b].done && writes[b].error == 0) {
            acked++;
            DS_CHECK(memcmp(got, want, BLOCK) == 0,
                     "round %u: acknowledged write of block %u is not in "
                     "the file", round, b);
        } else {
            DS_CHECK(memcmp(got, want, BLOCK) == 0 ||
                     ds_is_zero(got, BLOCK),
                     "round %u: unacknowledged block %u holds neither the "
                     "old nor the new data", round, b);
        }
    }
    printf("%s round %u: SIGTERM after %u completions, %u of %u writes "
           "acknowledged\n", ds_transport_name(t), round, kill_after, acked,
           NR_BLOCKS);
    DS_CHECK(acked >= kill_after, "fewer writes acknowledged (%u) than had "
             "completed before the signal (%u)", acked, kill_after);
    free(data);
    free(file);
}

int main(void)
{
    static const unsigned points[] = { 1, 64, 300 };
    unsigned round = 0;

    ds_init("sigterm-keeps-acknowledged-writes", 300);
    ds_path(image, sizeof image, "disk.img");

    for (int t = 0; t < DS_NR_TRANSPORTS; t++)
        for (size_t i = 0; i < sizeof points / sizeof points[0]; i++)
            one_round((enum ds_transport)t, ++round, points[i]);
    printf("PASS\n");
    return 0;
}
