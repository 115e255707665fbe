/* Claim: with -e 2 the server serves at most two clients at once: a
 * third client is neither served nor refused while two are connected (it
 * waits without even a greeting), and it is served as soon as one of the
 * two leaves.  Checked over a Unix socket and TCP.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define SIZE (1 * MiB)

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Poll h until it is ready or dead, or seconds pass. */
static void poll_for(struct nbd_handle *h, double seconds)
{
    double end = now() + seconds;

    while (now() < end && !nbd_aio_is_ready(h) && !nbd_aio_is_dead(h) &&
           !nbd_aio_is_closed(h))
        if (nbd_poll(h, 100) == -1)
            break;
}

static void exercise(const struct ds_server *s)
{
    struct nbd_handle *a = ds_open(s, ""), *b = ds_open(s, "");
    struct nbd_handle *c = ds_handle();
    unsigned char buf[4096], back[4096];

    printf("%s: third client of two\n", ds_transport_name(s->transport));
    DS_NBD(ds_aio_connect(c, s));
    poll_for(c, 1.5);
    DS_CHECK(!nbd_aio_is_dead(c) && !nbd_aio_is_closed(c),
             "the third client was refused: %s", nbd_get_error());
    DS_CHECK(nbd_aio_is_connecting(c) == 1,
             "the third client got past the handshake with two connected");

    /* The two connected clients are unaffected. */
    ds_fill(buf, sizeof buf, 1);
    DS_NBD(nbd_pwrite(a, buf, sizeof buf, 0, 0));
    DS_NBD(nbd_pread(b, back, sizeof back, 0, 0));
    DS_CHECK(memcmp(buf, back, sizeof buf) == 0, "b reads other data");

    DS_NBD(nbd_shutdown(a, 0));
    nbd_close(a);
    poll_for(c, 5);
    DS_CHECK(nbd_aio_is_ready(c) == 1,
             "the third client was not served after one of two left "
             "(%s)", nbd_connection_state(c));
    DS_NBD(nbd_pread(c, back, sizeof back, 0, 0));
    DS_CHECK(memcmp(buf, back, sizeof buf) == 0, "c reads other data");
    nbd_close(b);
    nbd_close(c);
}

int main(void)
{
    char image[256];

    ds_init("shared-limit-queues-extra-clients", 60);
    ds_path(image, sizeof image, "disk.img");
    ds_create_file(image, SIZE);

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "-f", "raw", "-e", "2", image, NULL };
        struct ds_server s;

        ds_server_start(&s, (enum ds_transport)t, args);
        exercise(&s);
        ds_server_stop(&s);
    }
    printf("PASS\n");
    return 0;
}
