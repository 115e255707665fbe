/* Claim: every transmission command does what it says, with and without
 * FUA, whether the client negotiated structured replies or not, on a Unix
 * socket and on TCP: READ (and READ with DF), WRITE, WRITE_ZEROES (plain,
 * NO_HOLE, FAST_ZERO), TRIM, FLUSH, CACHE, BLOCK_STATUS and DISC.  After
 * every step the export read through NBD and the image file read on the
 * host both match a model of what the test wrote.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define SIZE (16 * MiB)
#define HALF (SIZE / 2)

static char image[256];
static unsigned char *model;    /* what the export must hold */
static uint64_t tag;            /* next pattern tag */

/* Compare [off, off+len) of the export, the file and the model. */
static void verify(struct nbd_handle *h, uint64_t off, size_t len,
                   const char *step)
{
    unsigned char *buf = ds_malloc(len);

    DS_NBD(nbd_pread(h, buf, len, off, 0));
    for (size_t i = 0; i < len; i++)
        DS_CHECK(buf[i] == model[off + i],
                 "%s: NBD byte %" PRIu64 " is 0x%02x, expected 0x%02x", step,
                 off + i, buf[i], model[off + i]);
    ds_read_file(image, buf, len, off);
    for (size_t i = 0; i < len; i++)
        DS_CHECK(buf[i] == model[off + i],
                 "%s: file byte %" PRIu64 " is 0x%02x, expected 0x%02x", step,
                 off + i, buf[i], model[off + i]);
    free(buf);
}

static void write_pattern(struct nbd_handle *h, uint64_t off, size_t len,
                          uint32_t flags)
{
    ds_fill(model + off, len, tag++);
    DS_NBD(nbd_pwrite(h, model + off, len, off, flags));
}

static const char *fua_name(uint32_t flags)
{
    return flags & LIBNBD_CMD_FLAG_FUA ? "FUA" : "no FUA";
}

static void check_write(struct nbd_handle *h, uint64_t base, uint32_t flags)
{
    char step[64];

    snprintf(step, sizeof step, "WRITE (%s)", fua_name(flags));
    write_pattern(h, base, 64 * KiB, flags);
    verify(h, base - 4 * KiB, 72 * KiB, step);

    /* Minimum block size is 1: odd offsets and lengths work. */
    snprintf(step, sizeof step, "unaligned WRITE (%s)", fua_name(flags));
    write_pattern(h, base + 12345, 1001, flags);
    verify(h, base, 64 * KiB, step);
}

/* Extent callback: the flags of the first base:allocation extent. */
static int first_extent_flags(void *opaque, const char *context,
                              uint64_t offset, uint32_t *entries, size_t n,
                              int *error)
{
    uint32_t *status = opaque;

    if (strcmp(context, "base:allocation") == 0 && n >= 2)
        *status = entries[1];
    return 0;
}

static void check_zero(struct nbd_handle *h, uint64_t base, uint32_t flags,
                       bool structured)
{
    char step[64];

    snprintf(step, sizeof step, "WRITE_ZEROES (flags 0x%x)", flags);
    write_pattern(h, base, 128 * KiB, 0);
    DS_NBD(nbd_zero(h, 64 * KiB, base + 32 * KiB, flags));
    memset(model + base + 32 * KiB, 0, 64 * KiB);
    verify(h, base, 128 * KiB, step);

    /* Unaligned zeroing must not touch the neighbours. */
    DS_NBD(nbd_zero(h, 777, base + 5, flags));
    memset(model + base + 5, 0, 777);
    verify(h, base, 128 * KiB, step);

    /* NO_HOLE: "the area MUST be fully provisioned", so block status
     * cannot call it a hole. */
    if (structured && (flags & LIBNBD_CMD_FLAG_NO_HOLE)) {
        int64_t n;
        uint32_t status = 0;
        n = nbd_block_status(h, 64 * KiB, base + 32 * KiB,
                             (nbd_extent_callback){
                                 .callback = first_extent_flags,
                                 .user_data = &status },
                             0);
        DS_CHECK(n == 0, "block status: %s", nbd_get_error());
        DS_CHECK(!(status & LIBNBD_STATE_HOLE),
                 "%s: the zeroed range is reported as a hole", step);
    }
}

static void check_fast_zero(struct nbd_handle *h, uint64_t base)
{
    int rc, err;

    write_pattern(h, base, 128 * KiB, 0);
    rc = nbd_zero(h, 64 * KiB, base, LIBNBD_CMD_FLAG_FAST_ZERO);
    err = nbd_get_errno();
    if (rc == 0) {
        memset(model + base, 0, 64 * KiB);
    } else {
        /* Allowed, but only as ENOTSUP and with the data left alone. */
        DS_CHECK(err == ENOTSUP || err == EOPNOTSUPP,
                 "FAST_ZERO failed with errno %d: %s", err, nbd_get_error());
    }
    verify(h, base, 128 * KiB, "WRITE_ZEROES with FAST_ZERO");
}

static void check_trim(struct nbd_handle *h, uint64_t base, uint32_t flags)
{
    char step[64];

    snprintf(step, sizeof step, "TRIM (%s)", fua_name(flags));
    write_pattern(h, base, 192 * KiB, 0);
    DS_NBD(nbd_trim(h, 64 * KiB, base + 64 * KiB, flags));
    /* Trimmed bytes may read as anything, but the same through NBD and in
     * the file; the neighbours must be untouched. */
    DS_NBD(nbd_pread(h, model + base + 64 * KiB, 64 * KiB, base + 64 * KiB,
                     0));
    verify(h, base, 192 * KiB, step);
}

struct chunks {
    unsigned data, holes;
};

static int count_chunk(void *opaque, const void *sub, size_t count,
                       uint64_t offset, unsigned status, int *error)
{
    struct chunks *c = opaque;

    c->data += status == LIBNBD_READ_DATA;
    c->holes += status == LIBNBD_READ_HOLE;
    return 0;
}

static void check_read_df(struct nbd_handle *h, uint64_t base)
{
    unsigned char *buf = ds_malloc(256 * KiB);
    struct chunks c = { 0 };

    write_pattern(h, base, 64 * KiB, 0);
    /* Data then zeros: with DF the server must send it as one chunk. */
    DS_NBD(nbd_pread_structured(h, buf, 256 * KiB, base,
                                (nbd_chunk_callback){
                                    .callback = count_chunk,
                                    .user_data = &c },
                                LIBNBD_CMD_FLAG_DF));
    DS_CHECK(memcmp(buf, model + base, 256 * KiB) == 0,
             "READ with DF returned different data");
    DS_CHECK(c.data == 1 && c.holes == 0,
             "READ with DF came in %u data and %u hole chunks", c.data,
             c.holes);
    free(buf);
}

static int count_extents(void *opaque, const char *context, uint64_t offset,
                         uint32_t *entries, size_t n, int *error)
{
    uint64_t *covered = opaque;

    if (strcmp(context, "base:allocation") == 0)
        for (size_t i = 0; i < n; i += 2)
            *covered += entries[i];
    return 0;
}

static void check_block_status(struct nbd_handle *h, uint64_t base)
{
    uint64_t covered = 0;

    DS_NBD(nbd_block_status(h, 1 * MiB, base,
                            (nbd_extent_callback){
                                .callback = count_extents,
                                .user_data = &covered },
                            0));
    DS_CHECK(covered > 0 && covered <= 1 * MiB,
             "BLOCK_STATUS covered %" PRIu64 " bytes of 1 MiB", covered);
}

static void exercise(const struct ds_server *s, bool structured)
{
    struct nbd_handle *h = ds_handle();
    uint64_t base = structured ? 0 : HALF;
    const char *mode = structured ? "structured" : "simple";

    DS_NBD(nbd_set_request_structured_replies(h, structured));
    if (structured)
        DS_NBD(nbd_add_meta_context(h, "base:allocation"));
    DS_NBD(ds_connect(h, s));
    DS_CHECK(nbd_get_structured_replies_negotiated(h) == structured,
             "%s: structured replies negotiated = %d", mode,
             nbd_get_structured_replies_negotiated(h));
    printf("%s %s\n", ds_transport_name(s->transport), mode);

    /* What the server holds already (left by earlier rounds). */
    DS_NBD(nbd_pread(h, model + base, HALF, base, 0));
    verify(h, base, HALF, "initial contents");

    check_write(h, base + 64 * KiB, 0);
    check_write(h, base + 256 * KiB, LIBNBD_CMD_FLAG_FUA);

    check_zero(h, base + 1 * MiB, 0, structured);
    check_zero(h, base + 1 * MiB + 256 * KiB, LIBNBD_CMD_FLAG_FUA, structured);
    check_zero(h, base + 1 * MiB + 512 * KiB, LIBNBD_CMD_FLAG_NO_HOLE,
               structured);
    check_zero(h, base + 1 * MiB + 768 * KiB,
               LIBNBD_CMD_FLAG_NO_HOLE | LIBNBD_CMD_FLAG_FUA, structured);
    check_fast_zero(h, base + 2 * MiB);

    check_trim(h, base + 3 * MiB, 0);
    check_trim(h, base + 3 * MiB + 256 * KiB, LIBNBD_CMD_FLAG_FUA);

    DS_NBD(nbd_flush(h, 0));
    DS_NBD(nbd_cache(h, 1 * MiB, base, 0));

    if (structured) {
        check_read_df(h, base + 4 * MiB);
        check_block_status(h, base);
    }

    /* Everything acknowledged so far survives a clean NBD_CMD_DISC. */
    write_pattern(h, base + 5 * MiB, 4 * KiB, 0);
    DS_NBD(nbd_shutdown(h, 0));
    DS_CHECK(nbd_aio_is_closed(h) == 1, "%s: not closed after DISC", mode);
    nbd_close(h);

    h = ds_open(s, "");
    verify(h, base, HALF, "after DISC");
    nbd_close(h);
}

int main(void)
{
    ds_init("commands-work-with-and-without-fua", 300);
    ds_path(image, sizeof image, "disk.img");
    ds_create_file(image, SIZE);
    model = ds_malloc(SIZE);

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "-f", "raw", image, NULL };
        struct ds_server s;

        ds_server_start(&s, (enum ds_transport)t, args);
        exercise(&s, true);
        exercise(&s, false);
        DS_CHECK(ds_server_is_alive(&s), "server exited after DISC");
        ds_server_stop(&s);
    }
    free(model);
    printf("PASS\n");
    return 0;
}
