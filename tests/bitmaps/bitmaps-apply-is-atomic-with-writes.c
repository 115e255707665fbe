/* Claim: bitmap_apply is atomic with respect to concurrent writes.
 * Writer threads write distinct 4 KiB granules while another thread
 * rotates checkpoints, each rotation one apply of [add b(N+1), disable
 * bN]; afterwards every granule written is dirty in one bitmap, or in
 * two when its write spanned rotations (recorded before its data was
 * issued, in the bitmap then recording, and again after, in the one
 * recording then), never in none (no write lost between two bitmaps)
 * nor in more, and no other granule is dirty anywhere.  In plain mode
 * most writes do not span a rotation.  Runs in plain mode with bitmaps that
 * are not persistent, then in crash-safe mode with persistent ones
 * (each rotation stores them, writes wait for group commits).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "qcow2/create.h"

#define WRITERS     4
#define GRAN        4096u
#define SIZE        (64u << 20)

struct writer {
    struct image *img;
    int id;
    int n;
    int err;
};

static volatile int writers_left;

static void *write_granules(void *opaque)
{
    struct writer *w = opaque;
    static const char buf[GRAN];

    for (int k = 0; k < w->n && !w->err; k++) {
        uint64_t g = (uint64_t)w->id + (uint64_t)WRITERS * (uint64_t)k;
        w->err = w->img->ops->write(w->img, buf, GRAN, g * GRAN, 0);
    }
    __atomic_sub_fetch(&writers_left, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static int apply1(struct image *img, struct img_bitmap_action *a, size_t n)
{
    char msg[256];
    int err = img->ops->bitmap_apply(img, a, n, msg, sizeof msg);
    if (err)
        fprintf(stderr, "bitmap_apply: %s\n", msg);
    return err;
}

/* How many bitmaps have granule g dirty: the bitmaps b0..b(n-1); *first
 * and *last get the lowest and highest index that has it. */
static int dirty_in(struct image *img, int n, uint64_t g, int *first,
                    int *last, int *err)
{
    int hits = 0;
    for (int i = 0; i < n; i++) {
        char name[16];
        struct img_extent v[4];
        struct img_extents e = { v, 0, 4, g * GRAN };
        snprintf(name, sizeof name, "b%d", i);
        *err = img->ops->bitmap_status(img, name, GRAN, g * GRAN, &e);
        if (*err || e.n != 1 || v[0].length != GRAN) {
            fprintf(stderr, "bitmap_status %s at granule %" PRIu64
                    " failed\n", name, g);
            *err = -EIO;
            return 0;
        }
        if (v[0].flags & 1) {
            if (!hits)
                *first = i;
            *last = i;
            hits++;
        }
    }
    return hits;
}

static int run(const char *path, bool crash_safe, int per_writer)
{
    struct qcow2_create_opts o = { .size = SIZE };
    struct img_open_args args = { .path = path, .format = "qcow2",
                                  .bitmaps_crash_safe = crash_safe };
    struct image *img;
    int err = qcow2_create(path, &o);
    if (!err)
        err = img_open(&args, &img);
    if (err)
        return 1;

    struct img_bitmap_action add0 = { .op = IMG_BITMAP_ADD, .name = "b0",
                                      .granularity = GRAN,
                                      .persistent = crash_safe };
    if (apply1(img, &add0, 1))
        return 1;
    struct writer w[WRITERS];
    pthread_t th[WRITERS];
    writers_left = WRITERS;
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){ img, i, per_writer, 0 };
        pthread_create(&th[i], NULL, write_granules, &w[i]);
    }
    int n = 1;
    while (__atomic_load_n(&writers_left, __ATOMIC_SEQ_CST) > 0 && !err) {
        char next[16], cur[16];
        snprintf(next, sizeof next, "b%d", n);
        snprintf(cur, sizeof cur, "b%d", n - 1);
        struct img_bitmap_action a[2] = {
            { .op = IMG_BITMAP_ADD, .name = next, .granularity = GRAN,
              .persistent = crash_safe },
            { .op = IMG_BITMAP_DISABLE, .name = cur },
        };
        err = apply1(img, a, 2);
        n++;
        usleep(crash_safe ? 2000 : 500);
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(th[i], NULL);
        if (w[i].err)
            err = w[i].err;
    }
    int bad = 0, twice = 0;
    uint64_t written = (uint64_t)WRITERS * (uint64_t)per_writer;
    for (uint64_t g = 0; g < SIZE / GRAN && !err; g++) {
        int first = -1, last = -1;
        int hits = dirty_in(img, n, g, &first, &last, &err);
        bool ok = g < written ? hits == 1 || hits == 2 : hits == 0;
        twice += hits == 2;
        if (!err && !ok && bad++ < 10)
            fprintf(stderr, "granule %" PRIu64 ": dirty in %d bitmaps "
                    "(b%d..b%d)%s\n", g, hits, first, last,
                    g < written ? "" : ", never written");
    }
    printf("%s: %d rotations, %" PRIu64 " writes (%d across a rotation), "
           "%d wrong granules\n", crash_safe ? "crash safe" : "plain",
           n - 1, written, twice, bad);
    /* In plain mode writes are short beside the pauses between
     * rotations: most must be in one bitmap only. */
    if (!crash_safe && (uint64_t)twice * 4 > written) {
        fprintf(stderr, "too many writes in two bitmaps\n");
        bad++;
    }
    if (n < 3) {
        fprintf(stderr, "too few rotations during the writes\n");
        bad++;
    }
    img_close(img);
    return err || bad ? 1 : 0;
}

int main(void)
{
    char path[256];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/bitmaps-atomic-%d.qcow2",
             dir ? dir : "/tmp", (int)getpid());
    int rc = run(path, false, 3000);
    if (!rc)
        rc = run(path, true, 1000);
    unlink(path);
    return rc;
}
