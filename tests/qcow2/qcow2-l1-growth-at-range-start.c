/* qcow2-l1-growth-at-range-start: grow the L1 table when the clusters it
 * takes at the frontier start a refcount range that has no block yet,
 * while the free-cluster scan still has clusters to look at below them.
 * Counting the new table's first cluster then creates a refcount block,
 * and the allocator must not hand out one of the table's own clusters,
 * which are taken but not counted yet, for that block.
 *
 *   qcow2-l1-growth-at-range-start IMAGE
 *
 * IMAGE: a qcow2 image with 512-byte clusters whose first 64 KiB of
 * guest data are allocated.  Phase one writes single clusters until the
 * frontier starts a refcount range with no block, trims the first guest
 * cluster (a free cluster low in the file) and closes.  Phase two
 * reopens (the scan starts again from 0), writes one cluster into that
 * hole, which leaves the scan just past it, grows the L1 table, and
 * writes once more.  Prints where everything went; exit 0, 1 when the
 * driver fails, 2 for usage or open errors.  The caller judges the
 * image with qemu-img check and reads it back.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "qcow2/qcow2.h"

static int open_rw(const char *path, struct image **img)
{
    struct img_open_args args = { 0 };

    args.path = path;
    args.format = "qcow2";
    return img_open(&args, img);
}

/* Write one cluster of byte v at guest offset off with FUA. */
static int write_cluster(struct image *img, uint64_t off, int v)
{
    struct qcow2_state *s = qcow2_from_img(img);
    uint8_t *buf = malloc(s->cluster_size);

    if (!buf)
        return -1;
    memset(buf, v, s->cluster_size);
    int err = img->ops->write(img, buf, s->cluster_size, off, IMG_FUA);
    free(buf);
    if (err)
        fprintf(stderr, "FAIL: write at 0x%" PRIx64 ": %s\n", off,
                strerror(-err));
    return err;
}

/* Whether the frontier is the first cluster of a range with no block. */
static bool at_bare_range(const struct qcow2_state *s)
{
    uint64_t ti = s->frontier >> s->rb_bits;

    return (s->frontier & ((1ull << s->rb_bits) - 1)) == 0 &&
           (ti >= s->reftable_entries || s->reftable[ti] == 0);
}

int main(int argc, char **argv)
{
    struct image *img = NULL;
    int err;

    if (argc != 2) {
        fprintf(stderr, "usage: qcow2-l1-growth-at-range-start IMAGE\n");
        return 2;
    }
    if (open_rw(argv[1], &img) != 0)
        return 2;
    struct qcow2_state *s = qcow2_from_img(img);
    uint64_t cs = s->cluster_size, off = 64 * 1024;
    /* Phase one: guest clusters from 64 KiB on, each a new host cluster
     * at the frontier, until the frontier starts a bare range. */
    while (!at_bare_range(s)) {
        if (off >= img->size / 2 || write_cluster(img, off, 0x5a) != 0) {
            img_close(img);
            return 1;
        }
        off += cs;
    }
    err = img->ops->trim(img, cs, 0, IMG_FUA);
    if (err) {
        fprintf(stderr, "FAIL: trim: %s\n", strerror(-err));
        img_close(img);
        return 1;
    }
    printf("phase one: wrote up to 0x%" PRIx64 ", frontier at cluster %"
           PRIu64 "\n", off, s->frontier);
    img_close(img);

    /* Phase two. */
    if (open_rw(argv[1], &img) != 0)
        return 2;
    s = qcow2_from_img(img);
    if (!at_bare_range(s)) {
        fprintf(stderr, "FAIL: reopened with the frontier at cluster %"
                PRIu64 ", not at a range without a block\n", s->frontier);
        img_close(img);
        return 1;
    }
    uint64_t frontier = s->frontier;
    if (write_cluster(img, 0, 0x6b) != 0) {    /* takes the hole */
        img_close(img);
        return 1;
    }
    qcow2_lock(s);
    err = qcow2_grow_l1(s, (uint64_t)s->l1_size * 4);
    uint64_t l1_off = s->l1_offset, l1_size = s->l1_size;
    uint64_t block = s->reftable[frontier >> s->rb_bits];
    qcow2_unlock(s);
    if (err) {
        fprintf(stderr, "FAIL: growing the L1 table: %s\n", strerror(-err));
        img_close(img);
        return 1;
    }
    printf("L1 table: %" PRIu64 " entries at 0x%" PRIx64 "; refcount block"
           " of its range at 0x%" PRIx64 "\n", l1_size, l1_off, block);
    uint64_t l1_end = l1_off + l1_size * 8;
    if (block >= l1_off && block < l1_end) {
        fprintf(stderr, "FAIL: the refcount block at 0x%" PRIx64 " lies "
                "inside the new L1 table [0x%" PRIx64 ", 0x%" PRIx64 ")\n",
                block, l1_off, l1_end);
        img_close(img);
        return 1;
    }
    err = write_cluster(img, off, 0x7c);
    img_close(img);
    return err ? 1 : 0;
}
