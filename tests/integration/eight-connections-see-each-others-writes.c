/* Claim: a raw export advertises multi-conn and honours it: eight clients
 * connected at once each write their own blocks, flush, and then every
 * client reads back what a different client wrote, over several rounds in
 * which the blocks change hands.  Checked over a Unix socket and TCP.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define CLIENTS 8
#define BLOCK (64 * KiB)
#define NR_BLOCKS 256
#define SIZE ((uint64_t)NR_BLOCKS * BLOCK)
#define ROUNDS 3

static char image[256];
static pthread_barrier_t barrier;
static const struct ds_server *server;

/* Which client writes block b in round r. */
static unsigned owner(unsigned b, unsigned r)
{
    return (b + r * 3) % CLIENTS;
}

static uint64_t block_tag(unsigned b, unsigned r)
{
    return (uint64_t)r * 100000 + b;
}

static void *client(void *opaque)
{
    unsigned me = (unsigned)(uintptr_t)opaque;
    unsigned char *buf = ds_malloc(BLOCK), *want = ds_malloc(BLOCK);
    struct nbd_handle *h = ds_open(server, "");

    DS_CHECK(nbd_can_multi_conn(h) == 1,
             "client %u: raw export without multi-conn", me);
    /* All eight are connected before anyone writes. */
    pthread_barrier_wait(&barrier);

    for (unsigned r = 0; r < ROUNDS; r++) {
        for (unsigned b = 0; b < NR_BLOCKS; b++) {
            if (owner(b, r) != me)
                continue;
            ds_fill(buf, BLOCK, block_tag(b, r));
            DS_NBD(nbd_pwrite(h, buf, BLOCK, (uint64_t)b * BLOCK, 0));
        }
        /* With multi-conn a flush on any connection covers writes
         * completed on all of them; each client flushes its own. */
        DS_NBD(nbd_flush(h, 0));
        pthread_barrier_wait(&barrier);

        for (unsigned b = 0; b < NR_BLOCKS; b++) {
            if (owner(b, r) != (me + 1) % CLIENTS)
                continue;
            ds_fill(want, BLOCK, block_tag(b, r));
            DS_NBD(nbd_pread(h, buf, BLOCK, (uint64_t)b * BLOCK, 0));
            DS_CHECK(memcmp(buf, want, BLOCK) == 0,
                     "round %u: client %u reads block %u written by client "
                     "%u and sees other data", r, me, b, owner(b, r));
        }
        pthread_barrier_wait(&barrier);
    }
    DS_NBD(nbd_shutdown(h, 0));
    nbd_close(h);
    free(buf);
    free(want);
    return NULL;
}

static void check_file(void)
{
    unsigned char *buf = ds_malloc(BLOCK), *want = ds_malloc(BLOCK);

    for (unsigned b = 0; b < NR_BLOCKS; b++) {
        ds_fill(want, BLOCK, block_tag(b, ROUNDS - 1));
        ds_read_file(image, buf, BLOCK, (uint64_t)b * BLOCK);
        DS_CHECK(memcmp(buf, want, BLOCK) == 0, "file block %u differs", b);
    }
    free(buf);
    free(want);
}

int main(void)
{
    ds_init("eight-connections-see-each-others-writes", 300);
    ds_path(image, sizeof image, "disk.img");

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "-f", "raw", image, NULL };
        pthread_t threads[CLIENTS];
        struct ds_server s;

        ds_create_file(image, SIZE);
        ds_server_start(&s, (enum ds_transport)t, args);
        server = &s;
        printf("%s: %d clients\n", ds_transport_name(s.transport), CLIENTS);
        pthread_barrier_init(&barrier, NULL, CLIENTS);
        for (unsigned i = 0; i < CLIENTS; i++)
            DS_CHECK(pthread_create(&threads[i], NULL, client,
                                    (void *)(uintptr_t)i) == 0,
                     "pthread_create");
        for (unsigned i = 0; i < CLIENTS; i++)
            pthread_join(threads[i], NULL);
        pthread_barrier_destroy(&barrier);
        ds_server_stop(&s);
        check_file();
    }
    printf("PASS\n");
    return 0;
}
