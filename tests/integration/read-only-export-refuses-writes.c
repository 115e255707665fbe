/* Claim: a read-only export (-r) says so in its transmission flags, and
 * answers every kind of write that a client sends anyway (libnbd's
 * client-side checks turned off) with EPERM: WRITE, WRITE with FUA,
 * WRITE_ZEROES and TRIM, and a WRITE whose payload is larger than the
 * socket buffers (so the refusal must not overtake the payload).  Reads
 * still work, the connection stays usable, and the image file is not
 * changed by a single byte.  Checked with
 * structured and simple replies, over a Unix socket and TCP.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define SIZE (16 * MiB)

static char image[256];
static unsigned char *contents;

static void check_unchanged(struct nbd_handle *h, const char *when)
{
    unsigned char *buf = ds_malloc(SIZE);

    DS_NBD(nbd_pread(h, buf, SIZE, 0, 0));
    DS_CHECK(memcmp(buf, contents, SIZE) == 0, "%s: export changed", when);
    ds_read_file(image, buf, SIZE, 0);
    DS_CHECK(memcmp(buf, contents, SIZE) == 0, "%s: file changed", when);
    DS_CHECK(ds_file_size(image) == SIZE, "%s: file size changed", when);
    free(buf);
}

static void exercise(const struct ds_server *s, bool structured)
{
    struct nbd_handle *h = ds_handle();
    unsigned char buf[4096];

    DS_NBD(nbd_set_request_structured_replies(h, structured));
    DS_NBD(ds_connect(h, s));
    printf("%s %s\n", ds_transport_name(s->transport),
           structured ? "structured" : "simple");
    DS_CHECK(nbd_is_read_only(h) == 1, "-r export is not read-only");
    /* Send what a careless client would send. */
    DS_NBD(nbd_set_strict_mode(h, 0));

    memset(buf, 0x5a, sizeof buf);
    DS_NBD_ERRNO(nbd_pwrite(h, buf, sizeof buf, 0, 0), EPERM);
    DS_NBD_ERRNO(nbd_pwrite(h, buf, sizeof buf, 4096,
                            LIBNBD_CMD_FLAG_FUA), EPERM);
    DS_NBD_ERRNO(nbd_pwrite(h, buf, 1, SIZE - 1, 0), EPERM);
    DS_NBD_ERRNO(nbd_zero(h, 64 * KiB, 0, 0), EPERM);
    DS_NBD_ERRNO(nbd_zero(h, 64 * KiB, 64 * KiB, LIBNBD_CMD_FLAG_NO_HOLE),
                 EPERM);
    DS_NBD_ERRNO(nbd_trim(h, 64 * KiB, 128 * KiB, 0), EPERM);
    check_unchanged(h, "after small refused writes");

    unsigned char *big = ds_malloc(SIZE);
    memset(big, 0xa5, SIZE);
    DS_NBD_ERRNO(nbd_pwrite(h, big, SIZE, 0, 0), EPERM);
    free(big);

    check_unchanged(h, "after refused writes");
    nbd_close(h);
}

int main(void)
{
    ds_init("read-only-export-refuses-writes", 120);
    ds_path(image, sizeof image, "disk.img");
    ds_create_file(image, SIZE);
    contents = ds_malloc(SIZE);
    ds_fill(contents, SIZE, 7);
    memset(contents + 5 * MiB, 0, 1 * MiB);   /* a run of zeros too */
    ds_write_file(image, contents, SIZE, 0);

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "-f", "raw", "-r", image, NULL };
        struct ds_server s;

        ds_server_start(&s, (enum ds_transport)t, args);
        exercise(&s, true);
        exercise(&s, false);
        ds_server_stop(&s);
    }
    free(contents);
    printf("PASS\n");
    return 0;
}
