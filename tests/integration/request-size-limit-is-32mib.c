/* Claim: the server takes READ and WRITE requests up to the 32 MiB it
 * advertises as maximum payload and refuses one byte more with EINVAL,
 * without losing its place in the stream (the refused write's payload is
 * read and dropped, so the next request works) and without writing any
 * of it.  Commands with no payload (WRITE_ZEROES, TRIM, CACHE,
 * BLOCK_STATUS) are not held to the payload limit.  Checked with
 * structured and simple replies, over a Unix socket and TCP.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define LIMIT (32 * MiB)
#define SIZE (40 * MiB)

static char image[256];
static unsigned char *model;
static unsigned char *buf;
static uint64_t tag = 100;

static int ignore_extents(void *opaque, const char *context,
                          uint64_t offset, uint32_t *entries, size_t n,
                          int *error)
{
    return 0;
}

static void verify_file(const char *when)
{
    ds_read_file(image, buf, SIZE, 0);
    for (uint64_t i = 0; i < SIZE; i += 4096)
        DS_CHECK(memcmp(buf + i, model + i, 4096) == 0,
                 "%s: file block at %" PRIu64 " differs", when, i);
}

static void exercise(const struct ds_server *s, bool structured)
{
    struct nbd_handle *h = ds_handle();
    unsigned char small[4096];

    DS_NBD(nbd_set_request_structured_replies(h, structured));
    if (structured)
        DS_NBD(nbd_add_meta_context(h, "base:allocation"));
    DS_NBD(ds_connect(h, s));
    DS_CHECK(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM) == (int64_t)LIMIT,
             "maximum payload %lld",
             (long long)nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM));
    /* libnbd would refuse the oversized requests itself. */
    DS_NBD(nbd_set_strict_mode(h, 0));
    printf("%s %s\n", ds_transport_name(s->transport),
           structured ? "structured" : "simple");

    /* Exactly the limit, at an unaligned offset. */
    DS_NBD(nbd_pread(h, buf, LIMIT, 12345, 0));
    DS_CHECK(memcmp(buf, model + 12345, LIMIT) == 0, "32 MiB read differs");
    ds_fill(model + 4 * MiB + 1, LIMIT, tag++);
    DS_NBD(nbd_pwrite(h, model + 4 * MiB + 1, LIMIT, 4 * MiB + 1, 0));

    /* One byte more. */
    DS_NBD_ERRNO(nbd_pread(h, buf, LIMIT + 1, 0, 0), EINVAL);
    DS_NBD(nbd_pread(h, small, sizeof small, 0, 0));
    DS_CHECK(memcmp(small, model, sizeof small) == 0,
             "read after the refused read returned wrong data");

    memset(buf, 0xee, LIMIT + 1);
    DS_NBD_ERRNO(nbd_pwrite(h, buf, LIMIT + 1, 1 * MiB, 0), EINVAL);
    DS_NBD(nbd_pread(h, small, sizeof small, 1 * MiB, 0));
    DS_CHECK(memcmp(small, model + 1 * MiB, sizeof small) == 0,
             "read after the refused write returned wrong data");
    verify_file("after the refused write");

    /* No payload, no payload limit. */
    DS_NBD(nbd_cache(h, SIZE, 0, 0));
    if (structured)
        DS_NBD(nbd_block_status(h, SIZE, 0,
                                (nbd_extent_callback){
                                    .callback = ignore_extents },
                                0));
    DS_NBD(nbd_zero(h, LIMIT + 4 * MiB, 2 * MiB, 0));
    memset(model + 2 * MiB, 0, LIMIT + 4 * MiB);
    DS_NBD(nbd_flush(h, 0));
    verify_file("after zeroing 36 MiB");

    ds_fill(model, SIZE, tag++);
    DS_NBD(nbd_pwrite(h, model, LIMIT, 0, 0));
    DS_NBD(nbd_pwrite(h, model + LIMIT, SIZE - LIMIT, LIMIT,
                      LIBNBD_CMD_FLAG_FUA));
    verify_file("after rewriting");
    nbd_close(h);
}

int main(void)
{
    ds_init("request-size-limit-is-32mib", 300);
    ds_path(image, sizeof image, "disk.img");
    ds_create_file(image, SIZE);
    model = ds_malloc(SIZE);
    buf = ds_malloc(SIZE);
    ds_fill(model, SIZE, tag++);
    ds_write_file(image, model, SIZE, 0);

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "-f", "raw", image, NULL };
        struct ds_server s;

        ds_server_start(&s, (enum ds_transport)t, args);
        exercise(&s, true);
        exercise(&s, false);
        ds_server_stop(&s);
    }
    free(model);
    free(buf);
    printf("PASS\n");
    return 0;
}
