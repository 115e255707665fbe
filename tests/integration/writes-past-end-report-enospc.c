/* Claim: WRITE and WRITE_ZEROES that reach past the end of the export
 * fail with ENOSPC, as nbd-proto.md asks ("The server SHOULD return
 * NBD_ENOSPC if it receives a write request including one or more
 * sectors beyond the size of the device", and the same for write
 * zeroes), and not with the EINVAL used for reads.  Checked with and
 * without FUA, with structured and simple replies, over a Unix socket
 * and TCP.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define SIZE (64 * KiB)

static void exercise(const struct ds_server *s, bool structured)
{
    struct nbd_handle *h = ds_handle();
    unsigned char buf[8192];

    DS_NBD(nbd_set_request_structured_replies(h, structured));
    DS_NBD(ds_connect(h, s));
    DS_NBD(nbd_set_strict_mode(h, 0));
    printf("%s %s\n", ds_transport_name(s->transport),
           structured ? "structured" : "simple");

    memset(buf, 0x42, sizeof buf);
    DS_NBD_ERRNO(nbd_pwrite(h, buf, 1, SIZE, 0), ENOSPC);
    DS_NBD_ERRNO(nbd_pwrite(h, buf, sizeof buf, SIZE - 4096, 0), ENOSPC);
    DS_NBD_ERRNO(nbd_pwrite(h, buf, 4096, SIZE - 1,
                            LIBNBD_CMD_FLAG_FUA), ENOSPC);
    DS_NBD_ERRNO(nbd_zero(h, 1, SIZE, 0), ENOSPC);
    DS_NBD_ERRNO(nbd_zero(h, 8192, SIZE - 4096, LIBNBD_CMD_FLAG_NO_HOLE),
                 ENOSPC);
    nbd_close(h);
}

int main(void)
{
    char image[256];

    ds_init("writes-past-end-report-enospc", 60);
    ds_path(image, sizeof image, "disk.img");
    ds_create_file(image, SIZE);

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "-f", "raw", image, NULL };
        struct ds_server s;

        ds_server_start(&s, (enum ds_transport)t, args);
        exercise(&s, true);
        exercise(&s, false);
        ds_server_stop(&s);
    }
    DS_CHECK(ds_file_size(image) == SIZE, "the file grew");
    printf("PASS\n");
    return 0;
}
