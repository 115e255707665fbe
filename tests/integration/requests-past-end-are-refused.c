/* Claim: a request that reaches past the end of the export is refused:
 * READ, TRIM, CACHE and BLOCK_STATUS with EINVAL, as the spec names it
 * (nbd-proto.md, "Error values"), WRITE and WRITE_ZEROES with an error
 * (which one is writes-past-end-report-enospc's claim); offsets whose sum
 * with the length overflows are refused the same way; nothing is
 * written, the file does not grow, and the connection stays usable.
 * Requests that end exactly at the end work.  Checked with structured and
 * simple replies, over a Unix socket and TCP.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define SIZE (1 * MiB + 4096 + 3)       /* not a multiple of anything */

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
    struct nbd_handle *h = ds_handle();
    const nbd_extent_callback ext = { .callback = ignore_extents };
    const struct { uint64_t off, len; const char *what; } bad[] = {
        { SIZE, 1, "one byte at the end" },
        { SIZE - 1, 2, "one byte over" },
        { SIZE - 4096 + 1, 4096, "a block straddling the end" },
        { SIZE + 4096, 4096, "beyond the end" },
        { UINT64_MAX - 511, 512, "offset + length overflows" },
        { (uint64_t)1 << 63, 512, "offset 2^63" },
    };
    unsigned char *buf = ds_malloc(64 * KiB);

    DS_NBD(nbd_set_request_structured_replies(h, structured));
    if (structured)
        DS_NBD(nbd_add_meta_context(h, "base:allocation"));
    DS_NBD(ds_connect(h, s));
    DS_NBD(nbd_set_strict_mode(h, 0));
    DS_CHECK(nbd_get_size(h) == (int64_t)SIZE, "size %lld",
             (long long)nbd_get_size(h));
    printf("%s %s\n", ds_transport_name(s->transport),
           structured ? "structured" : "simple");

    memset(buf, 0xc3, 64 * KiB);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t off = bad[i].off, len = bad[i].len;
        printf("  %s\n", bad[i].what);
        DS_NBD_ERRNO(nbd_pread(h, buf, len, off, 0), EINVAL);
        DS_CHECK(nbd_pwrite(h, buf, len, off, 0) == -1,
                 "WRITE past the end succeeded");
        DS_CHECK(nbd_pwrite(h, buf, len, off, LIBNBD_CMD_FLAG_FUA) == -1,
                 "WRITE with FUA past the end succeeded");
        DS_CHECK(nbd_zero(h, len, off, 0) == -1,
                 "WRITE_ZEROES past the end succeeded");
        DS_NBD_ERRNO(nbd_trim(h, len, off, 0), EINVAL);
        DS_NBD_ERRNO(nbd_cache(h, len, off, 0), EINVAL);
        if (structured)
            DS_NBD_ERRNO(nbd_block_status(h, len, off, ext, 0), EINVAL);
    }

    /* The last bytes are reachable, and untouched. */
    DS_NBD(nbd_pread(h, buf, 4096, SIZE - 4096, 0));
    DS_CHECK(memcmp(buf, contents + SIZE - 4096, 4096) == 0,
             "the last block changed");
    DS_NBD(nbd_pwrite(h, contents + SIZE - 3, 3, SIZE - 3, 0));
    if (structured)
        DS_NBD(nbd_block_status(h, 1, SIZE - 1, ext, 0));

    ds_read_file(image, buf, 4096, SIZE - 4096);
    DS_CHECK(memcmp(buf, contents + SIZE - 4096, 4096) == 0,
             "the file's last block changed");
    DS_CHECK(ds_file_size(image) == SIZE, "the file is now %" PRIu64
             " bytes, was %llu", ds_file_size(image),
             (unsigned long long)SIZE);
    nbd_close(h);
    free(buf);
}

int main(void)
{
    ds_init("requests-past-end-are-refused", 120);
    ds_path(image, sizeof image, "disk.img");
    ds_create_file(image, SIZE);
    contents = ds_malloc(SIZE);
    ds_fill(contents, SIZE, 3);
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
