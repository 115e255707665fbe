/* Claim: SIGTERM while writes are in flight loses no acknowledged write.
 * A client queues hundreds of writes (some with FUA) on one connection,
 * the server gets SIGTERM while they are moving (or while the client
 * keeps a steady stream going and goes on sending), and then: the server
 * exits with status 0, and every write it acknowledged before the
 * connection closed is in the image file.  Writes it never acknowledged
 * may or may not be there, but never half of one block mixed with the
 * old contents of another.  Repeated with the signal at different points,
 * over a Unix socket and TCP.  Idle clients, in transmission or still in
 * the handshake, do not hold the exit up.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static int64_t issue(struct nbd_handle *h, unsigned char *data,
                     struct write *w)
{
    return nbd_aio_pwrite(h, data + (size_t)w->block * BLOCK, BLOCK,
                          (uint64_t)w->block * BLOCK,
                          (nbd_completion_callback){
                              .callback = write_done, .user_data = w },
                          w->block % 4 == 0 ? LIBNBD_CMD_FLAG_FUA : 0);
}

/* burst: queue every write at once and signal after kill_after of them
 * completed.  Otherwise a steady stream with 16 in flight, signalled
 * after kill_after were issued, and the client goes on issuing. */
static void one_round(enum ds_transport t, unsigned round, bool burst,
                      unsigned kill_after)
{
    const char *args[] = { "-f", "raw", image, NULL };
    static struct write writes[NR_BLOCKS];
    unsigned char *data = ds_malloc(SIZE), *file = ds_malloc(SIZE);
    unsigned nr_done = 0, acked = 0, before = 0;
    struct ds_server s;
    struct nbd_handle *h;
    int status;

    ds_create_file(image, SIZE);
    ds_server_start(&s, t, args);
    h = ds_open(&s, "");
    for (unsigned b = 0; b < NR_BLOCKS; b++) {
        ds_fill(data + (size_t)b * BLOCK, BLOCK, round * 10000 + b);
        writes[b] = (struct write){ .block = b, .nr_done = &nr_done };
    }

    if (burst) {
        for (unsigned b = 0; b < NR_BLOCKS; b++)
            DS_CHECK(issue(h, data, &writes[b]) > 0, "aio_pwrite: %s",
                     nbd_get_error());
        while (nr_done < kill_after)
            DS_NBD(nbd_poll(h, -1));
        before = nr_done;
        DS_CHECK(kill(s.pid, SIGTERM) == 0, "kill: %m");
    } else {
        for (unsigned b = 0; b < NR_BLOCKS; b++) {
            if (b == kill_after) {
                before = nr_done;
                DS_CHECK(kill(s.pid, SIGTERM) == 0, "kill: %m");
            }
            while (nbd_aio_in_flight(h) >= 16 && !nbd_aio_is_dead(h) &&
                   !nbd_aio_is_closed(h))
                if (nbd_poll(h, 1000) == -1)
                    break;
            if (issue(h, data, &writes[b]) <= 0) {
                DS_CHECK(b >= kill_after, "aio_pwrite before the signal: "
                         "%s", nbd_get_error());
                break;      /* the server has gone */
            }
        }
    }

    /* Drain: until every write has an outcome or the connection dies
     * (libnbd then fails whatever is left). */
    while (nr_done < NR_BLOCKS && !nbd_aio_is_dead(h) &&
           !nbd_aio_is_closed(h) && nbd_aio_in_flight(h) > 0)
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
    printf("%s round %u: %s, SIGTERM after %u %s (%u completed), %u of "
           "%u writes acknowledged\n", ds_transport_name(t), round,
           burst ? "burst" : "stream", kill_after,
           burst ? "completions" : "issued", before, acked, NR_BLOCKS);
    DS_CHECK(acked >= before, "fewer writes acknowledged (%u) than had "
             "completed before the signal (%u)", acked, before);
    free(data);
    free(file);
}

static void idle_clients(enum ds_transport t)
{
    const char *args[] = { "-f", "raw", image, NULL };
    struct ds_server s;
    struct nbd_handle *h;
    int raw, status;

    ds_create_file(image, SIZE);
    ds_server_start(&s, t, args);
    h = ds_open(&s, "");
    raw = ds_raw_connect(&s);   /* connected, never answers the greeting */
    DS_CHECK(kill(s.pid, SIGTERM) == 0, "kill: %m");
    status = ds_server_wait(&s, 5);
    DS_CHECK(status != -1, "%s: idle clients kept the server 5 s past "
             "SIGTERM", ds_transport_name(t));
    DS_CHECK(status == 0, "exit status %d after SIGTERM", status);
    printf("%s: idle clients, exit status 0\n", ds_transport_name(t));
    close(raw);
    nbd_close(h);
}

int main(void)
{
    static const struct { bool burst; unsigned point; } rounds[] = {
        { true, 1 }, { true, 64 }, { true, 300 }, { false, 40 },
        { false, 250 },
    };
    unsigned round = 0;

    ds_init("sigterm-keeps-acknowledged-writes", 300);
    ds_path(image, sizeof image, "disk.img");

    for (int t = 0; t < DS_NR_TRANSPORTS; t++)
        for (size_t i = 0; i < sizeof rounds / sizeof rounds[0]; i++)
            one_round((enum ds_transport)t, ++round, rounds[i].burst,
                      rounds[i].point);
    for (int t = 0; t < DS_NR_TRANSPORTS; t++)
        idle_clients((enum ds_transport)t);
    printf("PASS\n");
    return 0;
}
