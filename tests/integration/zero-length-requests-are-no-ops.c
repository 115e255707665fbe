/* Claim: requests of length 0 (READ, WRITE with and without FUA,
 * WRITE_ZEROES, TRIM, CACHE), which the spec leaves to the server, succeed
 * and change nothing, at the start, in the middle and at the very end of
 * the export; BLOCK_STATUS of length 0 is refused with EINVAL.  The
 * connection stays usable throughout.  Checked with structured and simple
 * replies, over a Unix socket and TCP.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define SIZE (256 * KiB)

static char image[256];
static unsigned char *contents;

static int ignore_extents(void *opaque, const char *context,
                          uint64_t offset, uint32_t *entries, size_t n,
                          int *error)
{
    return 0;
}

static void exercise(const struct ds_server *s, bool structured)
{
    const uint64_t offsets[] = { 0, 4097, SIZE };
    struct nbd_handle *h = ds_handle();
    unsigned char *buf = ds_malloc(SIZE);

    DS_NBD(nbd_set_request_structured_replies(h, structured));
    if (structured)
        DS_NBD(nbd_add_meta_context(h, "base:allocation"));
    DS_NBD(ds_connect(h, s));
    /* libnbd refuses zero-length requests itself unless told not to. */
    DS_NBD(nbd_set_strict_mode(h, 0));
    printf("%s %s\n", ds_transport_name(s->transport),
           structured ? "structured" : "simple");

    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        uint64_t off = offsets[i];
        memset(buf, 0x77, 16);
        DS_NBD(nbd_pread(h, buf, 0, off, 0));
        DS_NBD(nbd_pwrite(h, buf, 0, off, 0));
        DS_NBD(nbd_pwrite(h, buf, 0, off, LIBNBD_CMD_FLAG_FUA));
        DS_NBD(nbd_zero(h, 0, off, 0));
        DS_NBD(nbd_zero(h, 0, off, LIBNBD_CMD_FLAG_NO_HOLE));
        DS_NBD(nbd_trim(h, 0, off, 0));
        DS_NBD(nbd_cache(h, 0, off, 0));
        if (structured)
            DS_NBD_ERRNO(nbd_block_status(h, 0, off,
                                          (nbd_extent_callback){
                                              .callback = ignore_extents },
                                          0),
                         EINVAL);
        DS_NBD(nbd_flush(h, 0));
    }

    DS_NBD(nbd_pread(h, buf, SIZE, 0, 0));
    DS_CHECK(memcmp(buf, contents, SIZE) == 0, "the export changed");
    ds_read_file(image, buf, SIZE, 0);
    DS_CHECK(memcmp(buf, contents, SIZE) == 0, "the file changed");
    DS_CHECK(ds_file_size(image) == SIZE, "the file size changed");
    nbd_close(h);
    free(buf);
}

int main(void)
{
    ds_init("zero-length-requests-are-no-ops", 120);
    ds_path(image, sizeof image, "disk.img");
    ds_create_file(image, SIZE);
    contents = ds_malloc(SIZE);
    ds_fill(contents, SIZE, 11);
    ds_write_file(image, contents, SIZE, 0);

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "-f", "raw", image, NULL };
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
