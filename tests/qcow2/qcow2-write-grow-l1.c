/* qcow2-write-grow-l1: move an image's L1 table to a larger place, as a
 * write past its end would; qemu-img refuses images whose L1 table does
 * not cover the whole disk, so no valid image needs it for a write, and
 * this drives the driver directly.
 *
 *   qcow2-write-grow-l1 IMAGE ENTRIES...
 *
 * Opens IMAGE read-write with the format drivers, grows its L1 table to
 * at least each ENTRIES in turn, writes one cluster of 0x6c bytes at the
 * start of the disk through the driver, and closes it.  Exit 0, 1 when
 * the driver fails, 2 for usage or open errors.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "qcow2/qcow2.h"

int main(int argc, char **argv)
{
    struct img_open_args args = { 0 };
    struct image *img = NULL;

    if (argc < 3) {
        fprintf(stderr, "usage: qcow2-write-grow-l1 IMAGE ENTRIES...\n");
        return 2;
    }
    args.path = argv[1];
    args.format = "qcow2";
    if (img_open(&args, &img) != 0)
        return 2;
    struct qcow2_state *s = qcow2_from_img(img);
    for (int i = 2; i < argc; i++) {
        uint64_t n = strtoull(argv[i], NULL, 0);
        qcow2_lock(s);
        int err = qcow2_grow_l1(s, n);
        qcow2_unlock(s);
        if (err) {
            fprintf(stderr, "FAIL: growing the L1 table to %" PRIu64
                    " entries: %s\n", n, strerror(-err));
            img_close(img);
            return 1;
        }
        printf("L1 table: %" PRIu32 " entries at 0x%" PRIx64 "\n",
               s->l1_size, s->l1_offset);
    }
    uint8_t *buf = malloc(s->cluster_size);
    if (!buf)
        return 2;
    memset(buf, 0x6c, s->cluster_size);
    int err = img->ops->write(img, buf, s->cluster_size, 0, IMG_FUA);
    free(buf);
    img_close(img);
    if (err) {
        fprintf(stderr, "FAIL: write after growing: %s\n", strerror(-err));
        return 1;
    }
    return 0;
}
